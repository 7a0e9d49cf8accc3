"""torchrun with 2 CPU processes (gloo): the same global batch gives the weights of a single process."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from kuosan.checkpoint import checkpoint_folders, load_training_state
from kuosan.errors import KuosanError
from kuosan.train.trainer import Distributed, distributed_from_env
from tests.helpers import write_folder

SRC = str(Path(__file__).resolve().parents[2] / "src")


def kuosan_train(data: Path, run: Path, steps: int, processes: int) -> subprocess.CompletedProcess:
    launcher = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)] \
        if processes > 1 else []
    command = [sys.executable, *launcher, "-m", "kuosan", "train", str(data), "--out", str(run), "--size", "8",
               "--channels", "1", "--class-cond", "--hflip", "--preset", "tiny", "--batch", "8", "--steps",
               str(steps), "--log-every", "1", "--checkpoint-every", "2", "--sample-every", "1000", "--no-progress",
               "--device", "cpu", "--deterministic"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": SRC}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    return result


@pytest.mark.skipif(not torch.distributed.is_available(),
                    reason="needs torch.distributed")
def test_two_gloo_processes_match_one_process_with_the_same_global_batch_and_resume(tmp_path):
    data = tmp_path / "data"
    write_folder(data / "a", 4)
    write_folder(data / "b", 4)
    single = tmp_path / "single"
    kuosan_train(data, single, 5, processes=1)

    ddp = tmp_path / "ddp"
    first = kuosan_train(data, ddp, 3, processes=2)
    assert first.stderr.count("kuosan: training tiny UNet") == 1 and first.stdout.count("done") == 1  # rank 0 only
    resumed = kuosan_train(data, ddp, 5, processes=2)
    assert resumed.stderr.count("resuming") == 1 and "step-0000003" in resumed.stderr

    a = load_training_state(checkpoint_folders(single)[-1])
    b = load_training_state(checkpoint_folders(ddp)[-1])
    assert a["step"] == b["step"] == 5 and b["world_size"] == 2
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=0, atol=1e-6)
    log_a = [json.loads(line) for line in (single / "metrics.jsonl").read_text().splitlines()]
    log_b = [json.loads(line) for line in (ddp / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log_b] == [1, 2, 3, 4, 5]
    for ra, rb in zip(log_a, log_b, strict=True):       # the logged loss is the mean over all ranks
        assert rb["loss"] == pytest.approx(ra["loss"], rel=1e-5)


def test_distributed_env_and_batch_shares(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    dist = distributed_from_env()
    assert dist == Distributed(rank=2, world=4, local_rank=0) and not dist.main
    assert list(range(12))[dist.share(12)] == [6, 7, 8]
    shares = [list(range(12))[Distributed(r, 4).share(12)] for r in range(4)]
    assert sum(shares, []) == list(range(12))
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(KuosanError, match="RANK=4 does not fit WORLD_SIZE=4"):
        distributed_from_env()


def test_a_global_batch_that_does_not_split_evenly_is_refused(tmp_path, monkeypatch):
    from kuosan.train import train
    from tests.helpers import tiny_config

    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(KuosanError, match="--batch 8 .* multiple of the 3 processes"):
        train(tiny_config(str(write_folder(tmp_path / "d", 2))), tmp_path / "run", device="cpu", progress=False)
