"""Crash-safe checkpoints and exact resume (issue 6): a resumed run takes bitwise the same steps."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from kuosan.checkpoint import checkpoint_folders, load, load_training_state
from kuosan.errors import KuosanError
from kuosan.train import train
from tests.helpers import TEST_NET, tiny_config, write_folder


def class_folder(root: Path) -> Path:
    write_folder(root / "a", 3)
    write_folder(root / "b", 3)
    return root


def conditional_config(data: Path, **train_options):
    config = tiny_config(str(data), **{"steps": 12, "checkpoint_every": 4, "log_every": 1, "keep_checkpoints": 3,
                                       "deterministic": True, **train_options})
    return replace(config, net=replace(TEST_NET, num_classes=2),
                   data=replace(config.data, class_names=("a", "b"), hflip=True))


def losses(run: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())]


def final_state(run: Path) -> tuple[dict, dict]:
    folder = checkpoint_folders(run)[-1]
    return load_training_state(folder)["model"], load_file(folder / "model.safetensors")


def test_resume_after_damage_is_bitwise_equal_to_the_uninterrupted_run(tmp_path, capsys):
    data = class_folder(tmp_path / "data")
    config = conditional_config(data)
    train(config, tmp_path / "straight", device="cpu", progress=False)

    run = tmp_path / "interrupted"
    train(config, run, device="cpu", progress=False)
    # Simulate a crash after step 4's checkpoint: step 12's is gone and step 8's training state is damaged;
    # the log already holds lines for steps 5-12 that must be replaced, not duplicated.
    folders = checkpoint_folders(run)
    assert [f.name for f in folders] == ["step-0000004", "step-0000008", "step-0000012"]
    for f in folders[2].iterdir():
        f.unlink()
    folders[2].rmdir()
    state_file = folders[1] / "training_state.pt"
    state_file.write_bytes(state_file.read_bytes()[:100])
    (run / "checkpoints" / ".step-0000012.abc.tmp").mkdir()   # a half-written folder left by a kill
    capsys.readouterr()

    train(config, run, device="cpu", progress=False)
    err = capsys.readouterr().err
    assert "skipping damaged checkpoint step-0000008" in err and "resuming" in err and "step-0000004" in err
    assert "half-written" in err
    assert losses(run) == losses(tmp_path / "straight")         # bitwise, every step
    assert [s for s, _ in losses(run)] == list(range(1, 13))
    model_a, ema_a = final_state(tmp_path / "straight")
    model_b, ema_b = final_state(run)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]


def test_a_run_can_be_extended_and_a_finished_run_is_left_alone(tmp_path, capsys):
    data = write_folder(tmp_path / "data", 4)
    run = tmp_path / "run"
    train(tiny_config(str(data), steps=6, checkpoint_every=3, log_every=1), run, device="cpu", progress=False)
    train(tiny_config(str(data), steps=9, checkpoint_every=3, log_every=1), run, device="cpu", progress=False)
    assert [s for s, _ in losses(run)] == list(range(1, 10))
    straight = tmp_path / "straight"
    train(tiny_config(str(data), steps=9, checkpoint_every=3, log_every=1), straight, device="cpu", progress=False)
    assert losses(run) == losses(straight)

    before = (run / "metrics.jsonl").read_text()
    last = train(tiny_config(str(data), steps=9, checkpoint_every=3, log_every=1), run, device="cpu",
                 progress=False)
    assert last.name == "step-0000009" and "nothing to do" in capsys.readouterr().err
    assert (run / "metrics.jsonl").read_text() == before


def test_resume_refuses_changed_settings_and_resume_never_refuses_a_used_folder(tmp_path):
    data = write_folder(tmp_path / "data", 4)
    run = tmp_path / "run"
    train(tiny_config(str(data), steps=2), run, device="cpu", progress=False)
    with pytest.raises(KuosanError, match=r"train\.lr=0\.001.*started with 0\.002"):
        train(tiny_config(str(data), steps=4, lr=1e-3), run, device="cpu", progress=False)
    with pytest.raises(KuosanError, match="already holds a trained run"):
        train(tiny_config(str(data), steps=4), run, device="cpu", progress=False, resume="never")


def test_a_run_whose_checkpoints_are_all_damaged_is_refused(tmp_path):
    data = write_folder(tmp_path / "data", 4)
    run = tmp_path / "run"
    train(tiny_config(str(data), steps=2), run, device="cpu", progress=False)
    (checkpoint_folders(run)[-1] / "model.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(KuosanError, match="none of its checkpoints loads"):
        train(tiny_config(str(data), steps=4), run, device="cpu", progress=False)


def _train_command(data: Path, run: Path, steps: int) -> list[str]:
    return [sys.executable, "-m", "kuosan", "train", str(data), "--out", str(run), "--steps", str(steps),
            "--batch", "8", "--size", "8", "--channels", "1", "--preset", "tiny", "--checkpoint-every", "1",
            "--keep", "2", "--log-every", "1", "--sample-every", "100000", "--warmup", "5", "--deterministic",
            "--no-progress", "--device", "cpu"]


def _logged_steps(run: Path) -> int:
    try:
        return len((run / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def test_killed_at_random_moments_the_run_resumes_to_the_uninterrupted_result(tmp_path):
    data = write_folder(tmp_path / "data", 6)
    steps = 30
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    straight = tmp_path / "straight"
    subprocess.run(_train_command(data, straight, steps), env=env, check=True, capture_output=True, timeout=300)

    run = tmp_path / "run"
    rng = random.Random(0)
    kills = 0
    for attempt in range(6):
        with open(tmp_path / f"stderr-{attempt}.txt", "w") as err:
            proc = subprocess.Popen(_train_command(data, run, steps), env=env, stdout=subprocess.DEVNULL,
                                    stderr=err)
        logged = _logged_steps(run)
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline and _logged_steps(run) < logged + 2:
            time.sleep(0.005)        # let it start up and take a couple of steps
        if attempt % 2 == 0:         # then kill it while a checkpoint is being written
            while proc.poll() is None and time.monotonic() < deadline:
                root = run / "checkpoints"
                if any(p.name.endswith(".tmp") for p in root.iterdir()):
                    break
                time.sleep(0.0005)
        else:                        # or at a random moment
            time.sleep(rng.uniform(0.0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 3
    final = subprocess.run(_train_command(data, run, steps), env=env, check=True, capture_output=True, text=True,
                           timeout=300)
    messages = [(tmp_path / f"stderr-{k}.txt").read_text() for k in range(6)] + [final.stderr]
    resumed_from = [int(m.split("resuming")[1].split("step-")[1][:7]) for m in messages if "resuming" in m]
    assert len(resumed_from) >= 3 and resumed_from == sorted(resumed_from), resumed_from  # never restarted
    assert any("half-written" in m for m in messages)    # at least one kill landed inside a checkpoint write

    assert [f.name for f in checkpoint_folders(run)] == [f"step-{steps - 1:07d}", f"step-{steps:07d}"]
    for folder in (run / "checkpoints").iterdir():   # every folder on disk loads; no leftovers
        assert not folder.name.startswith(".")
        load(folder)
        assert load_training_state(folder)["step"] in (steps - 1, steps)
    assert losses(run) == losses(straight)
    model_a, ema_a = final_state(straight)
    model_b, ema_b = final_state(run)
    assert all(torch.equal(model_a[k], model_b[k]) for k in model_a)
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)


def test_gradient_checkpointing_trains_to_the_same_weights_and_may_be_switched_on_resume(tmp_path, monkeypatch):
    from kuosan.nets import unet

    recomputed = []
    checkpointed = unet._checkpointed
    monkeypatch.setattr(unet, "_checkpointed", lambda *args: recomputed.append(1) or checkpointed(*args))
    data = class_folder(tmp_path / "data")
    config = conditional_config(data, steps=6, checkpoint_every=3)
    train(config, tmp_path / "plain", device="cpu", progress=False)
    run = tmp_path / "checkpointed"
    train(replace(config, train=replace(config.train, steps=3)), run, device="cpu", progress=False)
    assert not recomputed
    train(replace(config, train=replace(config.train, gradient_checkpointing=True)), run, device="cpu",
          progress=False)                                    # resumed, now recomputing each block
    assert recomputed
    assert [s for s, _ in losses(run)] == list(range(1, 7))
    for a, b in zip(losses(tmp_path / "plain"), losses(run), strict=True):
        assert b[1] == pytest.approx(a[1], rel=1e-5)
    (model_a, ema_a), (model_b, ema_b) = final_state(tmp_path / "plain"), final_state(run)
    for k in model_a:
        torch.testing.assert_close(model_b[k], model_a[k], msg=k)
    for k in ema_a:
        torch.testing.assert_close(ema_b[k], ema_a[k], msg=k)
