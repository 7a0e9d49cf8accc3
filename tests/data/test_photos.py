import numpy as np
import torch

from kuosan.data.photos import RandomCrops


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
