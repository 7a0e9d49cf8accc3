"""A folder with every kind of awkward file (issue 6, item 3): skipped or converted, counted, one line each."""

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kuosan.cli import main
from kuosan.data import ImageFolder
from kuosan.errors import KuosanError
from kuosan.train import train
from tests.helpers import tiny_config


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width×height (a decompression bomb's calling card)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def encoded(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def bad_folder(root: Path) -> Path:
    root.mkdir()
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64), dtype=np.uint8))
    (root / "good-1.png").write_bytes(encoded(Image.new("L", (8, 8), 40), "PNG"))
    (root / "good-2.png").write_bytes(encoded(Image.new("L", (8, 8), 200), "PNG"))
    (root / "empty.png").write_bytes(b"")
    (root / "truncated.png").write_bytes(encoded(noise, "PNG")[:300])
    (root / "truncated.jpg").write_bytes(encoded(noise.convert("RGB"), "JPEG")[:700])   # fails only when decoded
    (root / "corrupt.png").write_bytes(rng.integers(0, 256, 500, dtype=np.uint8).tobytes())
    (root / "text.jpg").write_bytes(b"this is not a JPEG\n")
    (root / "notes.txt").write_text("not an image at all\n")
    (root / "bomb.png").write_bytes(png_claiming(20_000, 20_000))
    Image.fromarray(np.full((8, 8), 128 * 257, dtype=np.uint16)).save(root / "sixteen-bit.png")
    Image.new("L", (8, 8), 90).convert("P").save(root / "palette.png")
    Image.new("CMYK", (8, 8), (0, 0, 0, 128)).save(root / "cmyk.jpg")
    Image.new("RGBA", (8, 8), (10, 20, 30, 0)).save(root / "alpha.png")
    (root / ".hidden.png").write_bytes(b"")          # hidden files are not looked at
    return root


def test_every_kind_of_bad_file_is_skipped_or_converted_and_counted(tmp_path):
    folder = ImageFolder(bad_folder(tmp_path / "data"), size=8, channels=1)
    assert sorted(p.name for p in folder.files) == ["alpha.png", "cmyk.jpg", "good-1.png", "good-2.png",
                                                    "palette.png", "sixteen-bit.png", "truncated.jpg"]
    skipped = {reason: sorted(p.name for p in paths) for reason, paths in folder.report.skipped.items()}
    assert skipped == {"empty": ["empty.png"], "damaged": ["truncated.png"],
                       "not an image": ["corrupt.png", "text.jpg"], "not an image by name": ["notes.txt"],
                       "over 89 megapixels": ["bomb.png"]}
    assert folder.report.converted == {"16-bit": 1, "palette": 1, "CMYK": 1, "alpha": 1}
    assert folder.summary == (f"{folder.root}: 7 usable image(s); skipped 6 (1 damaged, 1 empty, 2 not an image, "
                              "1 not an image by name, 1 over 89 megapixels; first: bomb.png); converted 4 (1 16-bit, "
                              "1 CMYK, 1 alpha, 1 palette)")
    values = {p.name: folder.get(k).image for k, p in enumerate(folder.files)}
    assert torch.allclose(values["sixteen-bit.png"], torch.full((1, 8, 8), 128 / 127.5 - 1), atol=1e-6)
    assert torch.allclose(values["palette.png"], torch.full((1, 8, 8), 90 / 127.5 - 1), atol=1e-6)
    assert values["alpha.png"].min() > 0.99                       # transparent → the white background
    # the truncated JPEG passes the cheap scan but fails to decode: the next image stands in, and it is noted
    index = [p.name for p in folder.files].index("truncated.jpg")
    example = folder.get(index)
    assert example.failed == index and torch.equal(example.image, folder.get(index + 1).image)
    assert [p.name for p in folder.failed] == ["truncated.jpg"]


def test_training_on_the_bad_folder_warns_once_per_kind_of_problem(tmp_path, capsys):
    data = bad_folder(tmp_path / "data")
    run = tmp_path / "run"
    train(tiny_config(str(data), steps=4, log_every=2), run, device="cpu", progress=False)
    err = capsys.readouterr().err.strip().splitlines()
    scan = [line for line in err if "usable image(s)" in line]
    decode = [line for line in err if "failed to decode" in line]
    assert len(scan) == 1 and "skipped 6" in scan[0] and "converted 4" in scan[0]
    assert decode == ["kuosan: warning: 1 image(s) failed to decode and were replaced by the next image "
                      "(truncated.jpg)"]
    assert len(err) == 2, err


def test_a_folder_without_a_usable_image_fails_before_training(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    (root / "empty.png").write_bytes(b"")
    (root / "text.jpg").write_bytes(b"hello")
    with pytest.raises(KuosanError, match=r"no usable images .*skipped 2 \(1 empty, 1 not an image"):
        ImageFolder(root, 8, 1)
    assert main(["train", str(root), "--out", str(tmp_path / "run"), "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("kuosan: error:") and "no usable images" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()
