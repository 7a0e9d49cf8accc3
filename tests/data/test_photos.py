import numpy as np
import pytest
import torch

from kuosan.data.photos import RandomCrops
from kuosan.errors import KuosanError


def _photos(channels: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (40, 56) if channels == 1 else (40, 56, 3)
    return [rng.integers(0, 256, shape, dtype=np.uint8), rng.integers(0, 256, shape, dtype=np.uint8)]


def test_crops_have_the_size_and_range_and_are_reproducible():
    crops = RandomCrops(_photos(3), size=16)
    a = crops.get(0, np.random.default_rng(5)).image
    b = crops.get(0, np.random.default_rng(5)).image
    assert a.shape == (3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, b)


def test_a_full_size_crop_is_a_flip_or_rotation_of_the_photo():
    photo = _photos(1)[0][:16, :16]
    crops = RandomCrops([photo], size=16)
    x = torch.from_numpy(photo).float() / 127.5 - 1
    views = [torch.rot90(x, k, (0, 1)) for k in range(4)]
    views += [v.flip(-1) for v in views]
    for seed in range(8):
        crop = crops.get(0, np.random.default_rng(seed)).image[0]
        assert any(torch.equal(crop, v) for v in views)


def test_photos_are_drawn_in_proportion_to_their_area_up_to_the_cap():
    small, large = np.zeros((20, 20), np.uint8), np.full((40, 80), 255, np.uint8)   # 400 and 3,200 pixels
    for cap, expected in ((None, 400 / 3600), (800, 400 / 1200)):
        crops = RandomCrops([small, large], size=16, area_cap=cap)
        assert np.allclose(crops.weights, [expected, 1 - expected])
        rng = np.random.default_rng(0)
        drawn_small = np.mean([float(crops.get(0, rng).image.mean()) == -1.0 for _ in range(2000)])
        assert abs(drawn_small - expected) < 0.03


def _channel_weights(crop: torch.Tensor, photo: torch.Tensor) -> torch.Tensor | None:
    """The weights w with crop = w·photo's channels, up to one of the 8 flips/rotations; None if there are none."""
    channels = photo.reshape(3, -1).T.double()
    for k in range(8):      # undo the flip/rotation, then solve for the channel weights
        view = torch.rot90(crop[0].flip(-1) if k >= 4 else crop[0], -(k % 4), (0, 1)).reshape(-1).double()
        w = torch.linalg.lstsq(channels, view[:, None]).solution[:, 0]
        if torch.allclose(channels @ w, view, atol=1e-5):
            return w
    return None


def test_gray_mix_renders_colour_photos_as_convex_mixes_of_their_channels():
    colour = _photos(3)[0][:16, :16]
    gray = _photos(1)[0][:16, :16]
    crops = RandomCrops([colour, gray], size=16, gray_mix=True)
    assert crops.channels == 1
    x = torch.from_numpy(colour).float().permute(2, 0, 1) / 127.5 - 1
    rng = np.random.default_rng(0)
    mixed = 0
    for _ in range(40):
        crop = crops.get(0, rng).image
        assert crop.shape == (1, 16, 16)
        w = _channel_weights(crop, x)
        if w is None:
            continue     # the gray photo
        assert (w >= -1e-6).all() and abs(float(w.sum()) - 1) < 1e-5
        mixed += 1
    assert 10 < mixed < 30      # each photo half the time, by area


def test_min_contrast_scales_the_crop_about_its_mean_by_a_gain_in_range():
    photo = _photos(1)[0][:16, :16]
    plain = RandomCrops([photo], size=16)
    faint = RandomCrops([photo], size=16, min_contrast=0.5)
    gains = []
    for seed in range(30):
        a = plain.get(0, np.random.default_rng(seed)).image
        b = faint.get(0, np.random.default_rng(seed)).image
        assert torch.allclose(b.mean(), a.mean(), atol=1e-5)
        gains.append(float((b - b.mean()).std() / (a - a.mean()).std()))
    assert 0.5 <= min(gains) < 0.6 and 0.9 < max(gains) <= 1.0 + 1e-6
    with pytest.raises(KuosanError, match="min_contrast"):
        RandomCrops([photo], size=16, min_contrast=0)


def test_chroma_mix_renders_colour_crops_as_unit_zero_sum_mixes():
    colour = _photos(3)[0][:16, :16]
    x = torch.from_numpy(colour).float().permute(2, 0, 1) / 127.5 - 1
    crops = RandomCrops([colour], size=16, gray_mix=True, chroma_mix=1.0)
    rng = np.random.default_rng(0)
    angles = []
    for _ in range(20):
        crop = crops.get(0, rng).image
        w = _channel_weights(crop, x)
        assert w is not None, "a crop that is no channel mix of the photo"
        assert abs(float(w.sum())) < 1e-5 and abs(float(w.norm()) - 1) < 1e-5
        e1, e2 = torch.tensor([1.0, 0, -1]).double() / 2 ** 0.5, torch.tensor([1.0, -2, 1]).double() / 6 ** 0.5
        angles.append(float(torch.atan2(w @ e2, w @ e1)))
    assert np.ptp(angles) > 2      # directions spread over the chroma plane, not one fixed mix
    # A gray photo stored as RGB has no chroma: its chroma crops are zero.
    flat = np.repeat(_photos(1)[0][:16, :16, None], 3, axis=2)
    assert RandomCrops([flat], size=16, gray_mix=True, chroma_mix=1.0).get(0, rng).image.abs().max() < 1e-6
    with pytest.raises(KuosanError, match="chroma_mix"):
        RandomCrops([colour], size=16, chroma_mix=0.5)
    with pytest.raises(KuosanError, match="chroma_mix"):
        RandomCrops([colour], size=16, gray_mix=True, chroma_mix=1.5)


def test_chroma_guide_gives_chroma_crops_their_luminance_and_other_crops_none():
    colour = _photos(3)[0][:16, :16]
    x = torch.from_numpy(colour).float().permute(2, 0, 1) / 127.5 - 1
    crops = RandomCrops([colour, _photos(1)[0][:16, :16]], size=16, gray_mix=True, chroma_mix=0.5,
                        chroma_guide=True, min_contrast=0.5)
    rng = np.random.default_rng(0)
    kinds = {"chroma": 0, "mix": 0, "gray": 0}
    for _ in range(60):
        example = crops.get(0, rng)
        w = _channel_weights(example.image - example.image.mean(), x - x.mean((1, 2), keepdim=True))
        if example.guide is None:
            kinds["gray" if w is None else "mix"] += 1
            assert w is None or abs(float(w.sum())) > 0.3       # convex mixes sum to the contrast gain
            continue
        kinds["chroma"] += 1
        assert abs(float(w.sum())) < 1e-5 and example.guide.shape == (1, 16, 16)
        # The guide is the same view of the photo's channel mean, under the same contrast gain.
        g = _channel_weights(example.guide - example.guide.mean(), x - x.mean((1, 2), keepdim=True))
        assert g is not None and torch.allclose(g, g.mean().expand(3), atol=1e-5)
        assert abs(float(g.norm() / w.norm()) - 3 ** -0.5) < 1e-4     # |(1/3, 1/3, 1/3)| against a unit mix
    assert all(n > 5 for n in kinds.values()), kinds
    with pytest.raises(KuosanError, match="chroma_guide"):
        RandomCrops([colour], size=16, gray_mix=True, chroma_guide=True)
