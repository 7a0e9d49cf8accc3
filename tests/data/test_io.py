import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.data import (
    ImageFolder,
    builtin_digits_arrays,
    load_image,
    make_grid,
    open_dataset,
    pil_to_tensor,
    save_grid,
    save_image,
    tensor_to_uint8,
)
from kuosan.errors import KuosanError


def test_tensor_round_trip_is_exact_for_uint8():
    arr = np.arange(256, dtype=np.uint8).reshape(16, 16)
    x = pil_to_tensor(Image.fromarray(arr))
    assert x.shape == (1, 16, 16) and x.min() == -1 and x.max() == 1
    assert np.array_equal(tensor_to_uint8(x), arr)


def test_exif_orientation_is_applied(tmp_path):
    im = Image.new("RGB", (4, 2), "red")
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    im.save(tmp_path / "r.jpg", exif=exif)
    assert load_image(tmp_path / "r.jpg").size == (2, 4)


@pytest.mark.parametrize("mode,expected", [("L", "L"), ("RGB", "RGB"), ("RGBA", "RGB"), ("CMYK", "RGB"),
                                           ("I;16", "L"), ("P", "RGB"), ("1", "L")])
def test_any_mode_becomes_l_or_rgb(tmp_path, mode, expected):
    suffix = ".tif" if mode == "CMYK" else ".png"
    im = Image.new(mode, (6, 5))
    if mode == "I;16":
        im = Image.fromarray(np.full((5, 6), 65535, dtype=np.uint16))
    if mode == "P":
        im.putpalette([255, 0, 0] * 256)
    im.save(tmp_path / f"x{suffix}")
    out = load_image(tmp_path / f"x{suffix}")
    assert out.mode == expected and out.size == (6, 5)
    if mode == "I;16":
        assert np.asarray(out).max() == 255  # 16-bit white stays white


def test_unreadable_and_missing_files_are_clear_errors(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(KuosanError, match="not a readable image"):
        load_image(tmp_path / "bad.png")
    with pytest.raises(KuosanError, match="no such image"):
        load_image(tmp_path / "missing.png")


def test_save_is_atomic_and_leaves_no_temporary_files(tmp_path):
    save_image(torch.zeros(3, 4, 4), tmp_path / "a.png")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]
    with pytest.raises(KuosanError, match="unknown image format"):
        save_image(torch.zeros(3, 4, 4), tmp_path / "a.xyz")
    assert [p.name for p in tmp_path.iterdir()] == ["a.png"]


def test_grid_layout(tmp_path):
    images = torch.stack([torch.full((1, 3, 3), float(k) / 10) for k in range(5)])
    grid = make_grid(images, nrow=2, padding=1)
    assert grid.shape == (1, 3 * 4 + 1, 2 * 4 + 1)
    assert grid[0, 1, 5].item() == pytest.approx(0.1)  # second image, first row
    save_grid(images, tmp_path / "g.png", scale=2)
    assert Image.open(tmp_path / "g.png").size == (2 * (3 * 5 + 2), 2 * (2 * 5 + 2))  # 3 per row, padding 2


def test_image_folder_recursion_classes_and_crops(tmp_path):
    for cls, color in (("cats", 50), ("dogs", 200)):
        (tmp_path / cls / "deep").mkdir(parents=True)
        Image.new("L", (40, 20), color).save(tmp_path / cls / "a.png")
        Image.new("RGB", (20, 30), (color,) * 3).save(tmp_path / cls / "deep" / "b.jpg")
    (tmp_path / "cats" / "notes.txt").write_text("ignored")
    ds = ImageFolder(tmp_path, size=16, channels=3, class_labels=True)
    assert len(ds) == 4 and ds.class_names == ["cats", "dogs"]
    ex = ds.get(0)
    assert ex.image.shape == (3, 16, 16) and ex.label == 0
    assert ds.get(3).label == 1
    rng = np.random.default_rng(0)
    assert ImageFolder(tmp_path, size=8, channels=1, random_crop=True).get(1, rng).image.shape == (1, 8, 8)


def test_folder_without_images_is_an_error(tmp_path):
    (tmp_path / "readme.txt").write_text("x")
    with pytest.raises(KuosanError, match="no usable images"):
        ImageFolder(tmp_path, size=8)
    with pytest.raises(KuosanError, match="not a folder"):
        ImageFolder(tmp_path / "nope", size=8)


def test_builtin_digits():
    images, labels = builtin_digits_arrays()
    assert images.shape == (10_000, 28, 28) and images.dtype == np.uint8
    assert sorted(set(labels.tolist())) == list(range(10))
    ds = open_dataset("builtin:digits", class_labels=True)
    ex = ds.get(0)
    assert ex.image.shape == (1, 28, 28) and -1 <= ex.image.min() < ex.image.max() <= 1
    assert ds.class_names == [str(d) for d in range(10)]
    assert open_dataset("builtin:digits", size=32, channels=3).get(0).image.shape == (3, 32, 32)
    with pytest.raises(KuosanError, match="builtin:digits"):
        open_dataset("builtin:cats")
