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


def test_sample_tunes_a_ladder_and_the_printed_ladder_reproduces_the_images(trained_run, tmp_path, capsys):
    capsys.readouterr()
    assert main(["sample", str(trained_run), "--n", "4", "--sampler", "unipc", "--nfe", "3", "--tune-ladder", "4",
                 "--out", str(tmp_path / "tuned.npz")]) == 0
    line = [t for t in capsys.readouterr().err.splitlines() if "tuned σ ladder" in t][-1]
    ladder = line.split(": ")[-1]
    values = [float(v) for v in ladder.split(",")]
    assert len(values) == 4 and values[-1] == 0 and values == sorted(values, reverse=True)
    assert main(["sample", str(trained_run), "--n", "4", "--sampler", "unipc", "--sigmas", ladder,
                 "--out", str(tmp_path / "again.npz")]) == 0
    # The printed ladder is rounded to 5 digits; the 8-bit images come out the same.
    a, b = np.load(tmp_path / "tuned.npz")["images"], np.load(tmp_path / "again.npz")["images"]
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_sample_mean_start_reaches_the_sampler(trained_run, tmp_path, monkeypatch):
    # The option's effect is measured in tests/samplers and tests/tasks/test_generate; here: the CLI passes it on.
    from kuosan import samplers

    starts = []
    real = samplers.mean_start
    monkeypatch.setattr(samplers, "mean_start", lambda *a, **k: starts.append(len(a[1])) or real(*a, **k))
    common = ["sample", str(trained_run), "--n", "3", "--sampler", "unipc", "--steps", "3"]
    assert main([*common, "--out", str(tmp_path / "plain.npz")]) == 0 and starts == []
    assert main([*common, "--mean-start", "--out", str(tmp_path / "mean.npz")]) == 0
    assert starts == [3]                                          # one call, for the batch of 3


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
    import torch

    root = tmp_path_factory.mktemp("bad")
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    write_folder(root / "corrupt", 3, size=16)
    (root / "corrupt" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    (root / "notmodel").mkdir()
    (root / "afile.txt").write_text("a file, not a folder")
    torch.save({"weight": torch.zeros(2)}, root / "model.pt")
    (root / "pickled").mkdir()
    torch.save({"weight": torch.zeros(2)}, root / "pickled" / "diffusion_pytorch_model.bin")
    gray = tiny_config("unused")
    save_checkpoint(root / "gray-model", gray, build_denoiser(gray))
    # a run trained on the folder with one broken file (skipped with a warning), to resume with wrong settings
    assert main(["train", str(root / "corrupt"), "--out", str(root / "run"), *FAST_TRAIN]) == 0
    return root


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """The CLI in-process (an escaping exception would fail the test, as a traceback would)."""
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:      # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


D = ["builtin:digits", "--out", "{tmp}/r"]
M = ["{root}/gray-model", "--out", "{tmp}/g.png"]
BAD = [
    (["train", "{root}/empty", "--out", "{tmp}/r"], "no usable images"),
    (["train", "{root}/missing", "--out", "{tmp}/r"], "not a folder"),
    (["train", "builtin:cats", "--out", "{tmp}/r"], "unknown built-in dataset"),
    (["train", *D, "--steps", "0"], "--steps: must be at least 1"),
    (["train", *D, "--batch", "0"], "--batch: must be at least 1"),
    (["train", *D, "--size", "-8"], "--size: must be at least 1"),
    (["train", *D, "--lr", "-1"], "--lr: must be ≥ 0"),
    (["train", *D, "--sample-every", "-1"], "--sample-every: must be at least 0"),
    (["train", *D, "--minutes", "-5"], "--minutes: must be ≥ 0"),
    (["train", *D, "--ema-halflife", "0"], "--ema-halflife: must be > 0"),
    (["train", *D, "--preset", "huge"], "invalid choice: 'huge'"),
    (["train", *D, "--channels", "2"], "invalid choice: 2"),
    (["train", *D, "--device", "tpu"], "--device tpu: use auto, cpu or cuda"),
    (["train", "builtin:digits", "--out", "{root}/afile.txt"], "exists and is not a folder"),
    (["train", "builtin:digits", "--out", "{root}/afile.txt/run"], "afile.txt is not a folder"),
    (["train", "{root}/corrupt", "--out", "{root}/run", *FAST_TRAIN, "--lr", "0.5"],
     "cannot resume with train.lr=0.5"),
    (["train", "{root}/corrupt", "--out", "{root}/run", *FAST_TRAIN, "--channels", "1"],
     "cannot resume with net.channels=1; the run was started with 3"),
    (["train", "{root}/corrupt", "--out", "{root}/run", *FAST_TRAIN, "--resume", "never"],
     "already holds a trained run"),
    (["sample", "{root}/missing-run", "--out", "{tmp}/g.png"], "no such model"),
    (["sample", "{root}/notmodel", "--out", "{tmp}/g.png"], "not a kuosan model"),
    (["sample", "builtin:nothing", "--out", "{tmp}/g.png"], "unknown built-in model"),
    (["sample", "{root}/model.pt", "--out", "{tmp}/g.png"], "model.pt: a pickle file"),
    (["sample", "{root}/pickled", "--out", "{tmp}/g.png"], "diffusion_pytorch_model.bin: a pickle file"),
    (["sample", "{root}/afile.txt", "--out", "{tmp}/g.png"], "a file, not a model"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/g.jpg2"], "use a .png grid"),
    (["sample", *M, "--sampler", "magic"], "invalid choice: 'magic'"),
    (["sample", *M, "--label", "3"], "unconditional"),
    (["sample", *M, "--guidance", "3"], "guidance needs class labels"),
    (["sample", *M, "--guidance", "-1"], "--guidance: must be ≥ 0"),
    (["sample", *M, "--n", "0"], "--n: must be at least 1"),
    (["sample", *M, "--steps", "0"], "--steps: must be at least 1"),
    (["sample", *M, "--nfe", "-3"], "--nfe: must be at least 1"),
    (["sample", *M, "--sigmas", "80,1,x"], "give numbers separated by commas"),
    (["sample", *M, "--sigmas", "80,1,2,0"], "must be descending, positive and end in 0"),
    (["sample", *M, "--sigmas", "80,1"], "must be descending, positive and end in 0"),
    (["sample", *M, "--tune-ladder", "4", "--sigmas", "80,1,0"], "either --sigmas or --tune-ladder"),
    (["sample", *M, "--tune-ladder", "4", "--sampler", "euler_ancestral"], "deterministic sampler"),
    (["sample", *M, "--tune-ladder", "0"], "--tune-ladder: must be at least 1"),
    (["sample", "{root}/gray-model", "--out", "{tmp}/nofolder/g.png"], "folder {tmp}/nofolder does not exist"),
    (["sample", "{root}/gray-model", "--out", "{root}/afile.txt/g.png"], "afile.txt is not a folder"),
    (["info", "{root}/missing-run"], "no such model"),
    (["info", "{root}/model.pt"], "kuosan does not load model weights from pickles"),
    (["eval", "{root}/gray-model", "--n", "0"], "--n: must be at least 1"),
    (["denoise", "{root}/missing.png", "{tmp}/o.png"], "missing.png: no such image file"),
    (["denoise", "{root}/afile.txt", "{tmp}/o.png"], "afile.txt: not a readable image"),
]


@pytest.mark.parametrize("argv,message", BAD, ids=[" ".join(a[:2]) + f" [{m}]" for a, m in BAD])
def test_bad_input_is_one_clear_line_and_exit_code_2(bad_inputs, tmp_path, capsys, argv, message):
    argv = [a.format(root=bad_inputs, tmp=tmp_path) for a in argv]
    code, err = run_main(argv, capsys)
    assert code == 2, err
    assert message.format(root=bad_inputs, tmp=tmp_path) in err
    lines = err.strip().splitlines()
    assert lines[-1].startswith(("kuosan: error:", "kuosan ")) and "Traceback" not in err, err
    assert len([line for line in lines if "error" in line]) == 1, err


def test_bad_input_in_a_real_process_has_no_traceback(bad_inputs, tmp_path):
    result = run_cli("sample", bad_inputs / "model.pt", "--out", tmp_path / "g.png")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [result.stderr.strip()] and "pickle" in result.stderr


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_an_output_folder_that_is_not_writable_is_refused_before_any_work(bad_inputs, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        code, err = run_main(["sample", str(bad_inputs / "gray-model"), "--out", str(locked / "g.png")], capsys)
        assert code == 2 and "is not writable" in err
        code, err = run_main(["train", "builtin:digits", "--out", str(locked / "run")], capsys)
        assert code == 2 and "is not writable" in err
    finally:
        locked.chmod(0o700)


def test_training_a_folder_with_a_broken_file_warns_and_trains(bad_inputs):
    from kuosan.checkpoint import checkpoint_folders

    assert [p.name for p in checkpoint_folders(bad_inputs / "run")] == ["step-0000002", "step-0000003"]


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


@pytest.mark.parametrize("edit,message", [
    (lambda c: c["net"].update(colour=2), "config.json: unknown key net.colour (known: channels, "),
    (lambda c: c["train"].update(lr="fast"), "config.json: train.lr: expected float, got 'fast'"),
    (lambda c: c["net"].update(base_channels=16.5), "config.json: net.base_channels: expected int, got 16.5"),
    (lambda c: c["net"].update(channel_mult=2), "config.json: net.channel_mult: expected a list, got int"),
    (lambda c: c["net"].update(channel_mult=[1, "2"]), "config.json: net.channel_mult[1]: expected int, got '2'"),
    (lambda c: c["data"].update(hflip=1), "config.json: data.hflip: expected bool, got 1"),
    (lambda c: c.update(net=[]), "config.json: net: expected an object, got list"),
])
def test_a_config_with_unknown_keys_or_wrong_types_names_the_key(bad_inputs, tmp_path, capsys, edit, message):
    import json
    import shutil

    model = tmp_path / "m"
    shutil.copytree(bad_inputs / "gray-model", model)
    config = json.loads((model / "config.json").read_text())
    edit(config)
    (model / "config.json").write_text(json.dumps(config))
    code, err = run_main(["info", str(model)], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_channel_mismatch_between_model_and_image_is_a_clear_error(bad_inputs):
    import torch

    import kuosan

    model = kuosan.load(bad_inputs / "gray-model")
    with pytest.raises(ValueError, match="takes 1-channel images, got 3"):
        model(torch.zeros(1, 3, 8, 8), 1.0)
