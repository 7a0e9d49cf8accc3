"""The command line end to end, and bad input → one line on stderr, exit code 2, no traceback."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from kuosan.checkpoint import build_denoiser, save_checkpoint
from kuosan.cli import main
from tests.helpers import tiny_config, write_folder

FAST_TRAIN = ["--preset", "tiny", "--size", "16", "--steps", "3", "--batch", "4", "--sample-every", "1000",
              "--checkpoint-every", "2", "--no-progress", "--device", "cpu"]


def run_cli(*args, cwd=None):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "kuosan", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = root / "data"
    write_folder(data / "x", 8, size=16, mode="RGB")
    write_folder(data / "y", 8, size=16, mode="RGB")
    assert main(["train", str(data), "--out", str(root / "run"), "--class-cond", *FAST_TRAIN]) == 0
    return root / "run"


def test_train_sample_info_end_to_end(trained_run, tmp_path, capsys):
    assert sorted(p.name for p in (trained_run / "checkpoints").iterdir()) == ["step-0000002", "step-0000003"]
    assert (trained_run / "metrics.jsonl").is_file() and (trained_run / "samples" / "step-0000003.png").is_file()

    assert main(["sample", str(trained_run), "--n", "6", "--steps", "2", "--out", str(tmp_path / "g.png")]) == 0
    grid = Image.open(tmp_path / "g.png")
    assert grid.mode == "RGB" and grid.size == (2 + 2 * 18, 2 + 3 * 18)  # one column per class

    assert main(["sample", str(trained_run), "--n", "3", "--steps", "2", "--label", "1", "--guidance", "2",
                 "--sampler", "dpmpp_2m", "--out", str(tmp_path / "s.npz")]) == 0
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["images"].shape == (3, 16, 16, 3) and arrays["images"].dtype == np.uint8
    assert arrays["labels"].tolist() == [1, 1, 1]

    assert main(["sample", str(trained_run), "--n", "2", "--steps", "1", "--out", str(tmp_path / "each") + "/"]) == 0
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["00000_label0.png", "00001_label1.png"]

    capsys.readouterr()
    assert main(["info", str(trained_run)]) == 0
    text = capsys.readouterr().out
    assert "2 classes" not in text and "x, y" in text and "step 3" in text


def test_python_m_kuosan_runs_and_sample_is_reproducible(trained_run, tmp_path):
    a = run_cli("sample", trained_run, "--n", "2", "--steps", "2", "--seed", "5", "--out", tmp_path / "a.png")
    b = run_cli("sample", trained_run, "--n", "2", "--steps", "2", "--seed", "5", "--out", tmp_path / "b.png")
    assert a.returncode == 0 and b.returncode == 0, a.stderr
    assert np.array_equal(np.asarray(Image.open(tmp_path / "a.png")), np.asarray(Image.open(tmp_path / "b.png")))


def test_help_everywhere_mentions_units_and_defaults():
    for command in ([], ["train"], ["sample"], ["info"]):
        result = run_cli(*command, "--help")
        assert result.returncode == 0 and "usage: kuosan" in result.stdout
    assert "default: 18" in run_cli("sample", "--help").stdout
    assert "pixels" in run_cli("train", "--help").stdout


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    write_folder(root / "corrupt", 3, size=16)
    (root / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notmodel").mkdir()
    gray = tiny_config("unused")
    save_checkpoint(root / "gray-model", gray, build_denoiser(gray))
    return root


BAD = [
    (["train", "{root}/empty", "--out", "{tmp}/r"], "no images found"),
    (["train", "{root}/missing", "--out", "{tmp}/r"], "not a folder"),
    (["train", "{root}/corrupt", "--out", "{tmp}/r", *FAST_TRAIN], "broken.png: not a readable image"),
    (["train", "builtin:cats", "--out", "{tmp}/r"], "unknown built-in dataset"),
    (["train", "builtin:digits", "--out", "{tmp}/r", "--steps", "0"], "must be at least 1"),
    (["train", "builtin:digits", "--out", "{tmp}/r", "--lr", "-1"], "must be ≥ 0"),
    (["train", "builtin:digits", "--out", "{tmp}/r", "--preset", "huge"], "invalid choice"),
    (["sample", "{root}/missing-run", "--out", "{tmp}/g.png"], "no such model"),
    (["sample", "{root}/notmodel", "--out", "{tmp}/g.png"], "not a kuosan model"),
    (["sample", "builtin:nothing", "--out", "{tmp}/g.png"], "unknown built-in model"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/g.jpg2"], "use a .png grid"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/g.png", "--sampler", "magic"], "invalid choice"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/g.png", "--label", "3"], "unconditional"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/g.png", "--guidance", "3"], "guidance needs class labels"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/nofolder/g.png", "--steps", "1", "--n", "1"],
     "does not exist"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/g.png", "--n", "0"], "must be at least 1"),
    (["info", "{root}/missing-run"], "no such model"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a[:2]) + f" [{m}]" for a, m in BAD])
def test_bad_input_is_one_clear_line_and_exit_code_2(bad_inputs, tmp_path, argv, message):
    argv = [a.format(root=bad_inputs, tmp=tmp_path) for a in argv]
    result = run_cli(*argv)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert message in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(("kuosan: error:", "kuosan ")), result.stderr


def test_damaged_model_files_are_clear_errors(bad_inputs, tmp_path):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(bad_inputs / "gray-model", model)
    (model / "config.json").write_text('{"net": {"channels": 1, "colour": 2}}')
    result = run_cli("info", model)
    assert result.returncode == 2 and "unknown key" in result.stderr and "colour" in result.stderr
    shutil.copy(bad_inputs / "gray-model" / "config.json", model / "config.json")
    (model / "model.safetensors").write_bytes(b"garbage")
    result = run_cli("info", model)
    assert result.returncode == 2 and "unreadable weights" in result.stderr and "Traceback" not in result.stderr


def test_channel_mismatch_between_model_and_image_is_a_clear_error(bad_inputs):
    import torch

    import kuosan

    model = kuosan.load(bad_inputs / "gray-model")
    with pytest.raises(ValueError, match="takes 1-channel images, got 3"):
        model(torch.zeros(1, 3, 8, 8), 1.0)
