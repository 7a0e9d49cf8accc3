"""Offline metrics: exact answers for the Fréchet distance, KID's unbiasedness, the shipped classifier, and
`kuosan eval` end to end."""

import pytest
import torch

from kuosan.checkpoint import build_denoiser, save_checkpoint
from kuosan.cli import main
from kuosan.config import DataConfig, RunConfig
from kuosan.tasks.evaluate import frechet_distance, kernel_inception_distance, load_classifier, real_digit_features
from tests.helpers import TEST_NET


def test_frechet_distance_is_zero_for_a_set_with_itself_and_the_squared_shift_for_a_shifted_copy():
    a = torch.randn(500, 8, generator=torch.Generator().manual_seed(0)) @ torch.randn(8, 8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    delta = torch.tensor([1.0, -2.0, 0.5, 0, 0, 0, 0, 3.0])
    # Same covariance, means apart by δ: FD = ‖δ‖² exactly.
    assert frechet_distance(a, a + delta) == pytest.approx(float(delta.pow(2).sum()), rel=1e-6)
    # Different spreads: FD between N(0, I) and N(0, 4I) fitted moments ≈ d·(2 − 1)² = 8.
    b = torch.randn(20000, 8, generator=torch.Generator().manual_seed(1))
    c = 2 * torch.randn(20000, 8, generator=torch.Generator().manual_seed(2))
    assert frechet_distance(b, c) == pytest.approx(8.0, rel=0.05)


def test_kid_is_unbiased_near_zero_for_one_distribution_and_positive_for_a_shift():
    g = torch.Generator().manual_seed(3)
    same = [kernel_inception_distance(torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g))
            for _ in range(20)]
    mean = sum(same) / len(same)
    spread = (sum((v - mean) ** 2 for v in same) / len(same)) ** 0.5
    assert abs(mean) < 2 * spread / len(same) ** 0.5 + 1e-6    # zero within its standard error
    assert min(same) < 0 < max(same)                           # unbiased: it does go below zero
    shifted = kernel_inception_distance(torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g) + 0.5)
    assert shifted > max(same)


def test_shipped_digit_classifier_reaches_98_percent_on_the_held_out_digits():
    clf = load_classifier()
    feats, labels = real_digit_features(clf)
    preds = clf.head(feats).argmax(1)
    assert feats.shape == (2000, 128)
    assert float((preds == labels).float().mean()) >= 0.98


def test_eval_cli_prints_scores_and_refuses_non_digit_models(tmp_path, capsys):
    torch.manual_seed(0)
    net = TEST_NET.__class__(**{**TEST_NET.to_dict(), "num_classes": 10, "channel_mult": (1, 2),
                                "attention_levels": ()})
    config = RunConfig(net=net, data=DataConfig(size=28, channels=1, class_names=tuple("0123456789")))
    save_checkpoint(tmp_path / "m", config, build_denoiser(config))
    assert main(["eval", str(tmp_path / "m"), "--n", "20", "--steps", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    row = [line for line in out.splitlines() if line.startswith("| heun |")]
    assert len(row) == 1 and len(row[0].split("|")) == 10       # sampler, NFE, 3 FD, 2 KID, accuracy

    other = RunConfig(net=TEST_NET, data=DataConfig(size=16, channels=1))
    save_checkpoint(tmp_path / "o", other, build_denoiser(other))
    assert main(["eval", str(tmp_path / "o"), "--n", "20", "--device", "cpu"]) == 2
    assert "no feature network" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "m"), "--sweep-steps", "5,x"]) == 2
    assert main(["eval", str(tmp_path / "m"), "--sweep-steps", "5", "--samplers", "nope"]) == 2


def test_demo_runs_end_to_end_and_writes_every_file_it_links(tmp_path):
    import re

    assert main(["demo", "--out", str(tmp_path / "demo"), "--quick"]) == 0
    page = (tmp_path / "demo" / "index.html").read_text()
    linked = re.findall(r'src="([^"]+)"', page)
    assert len(linked) == 5 and "PSNR" in page
    for name in linked:
        assert (tmp_path / "demo" / name).stat().st_size > 0
