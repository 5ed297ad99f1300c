"""Every image mode Pillow reads becomes 8-bit with its real range, or is refused naming the file (image_folder)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from aelab.data import ImageFolderDataModule
from aelab.data.image_folder import MODES, to_mode
from aelab.errors import DataError


def image(mode: str, pixels: list, **info) -> Image.Image:
    """A 1-row image of `mode` with exactly these pixel values."""
    img = Image.new(mode, (len(pixels), 1))
    for x, value in enumerate(pixels):
        img.putpixel((x, 0), value)
    img.info.update(info)
    return img


def palette(transparent: int | None = None) -> Image.Image:
    img = image("P", [0, 1, 2])
    img.putpalette([255, 0, 0, 0, 255, 0, 200, 100, 50] + [0] * 759)
    if transparent is not None:
        img.info["transparency"] = transparent
    return img


def luma(r, g, b) -> int:
    """Pillow's ITU-R 601-2 greyscale, in its integer arithmetic."""
    return (r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16


# (mode, image, target mode, expected pixels): each expected value worked out by hand from the mode's range
CASES = {
    "1": (lambda: image("1", [0, 1]), "L", [0, 255]),
    "L": (lambda: image("L", [0, 7, 255]), "L", [0, 7, 255]),
    "L-to-RGB": (lambda: image("L", [0, 200]), "RGB", [(0, 0, 0), (200, 200, 200)]),
    "L-tRNS": (lambda: image("L", [7, 200], transparency=7), "L", [0, 200]),  # the tRNS grey is transparent
    "LA": (lambda: image("LA", [(200, 255), (200, 128), (200, 0)]), "L", [200, 100, 0]),  # over black
    "La": (lambda: image("La", [(100, 128)]), "L", [100]),  # premultiplied: already over black
    "P": (lambda: palette(), "RGB", [(255, 0, 0), (0, 255, 0), (200, 100, 50)]),
    "P-transparency": (lambda: palette(transparent=1), "RGB", [(255, 0, 0), (0, 0, 0), (200, 100, 50)]),
    "PA": (lambda: Image.merge("PA", (palette(), image("L", [255, 128, 0]))), "RGB",
           [(255, 0, 0), (0, 128, 0), (0, 0, 0)]),
    "RGB": (lambda: image("RGB", [(1, 2, 3), (250, 128, 0)]), "RGB", [(1, 2, 3), (250, 128, 0)]),
    "RGB-to-L": (lambda: image("RGB", [(250, 128, 0)]), "L", [luma(250, 128, 0)]),
    "RGBA": (lambda: image("RGBA", [(200, 100, 50, 255), (200, 100, 50, 128), (9, 9, 9, 0)]), "RGB",
             [(200, 100, 50), (100, 50, 25), (0, 0, 0)]),
    "RGBa": (lambda: image("RGBa", [(100, 50, 25, 128)]), "RGB", [(100, 50, 25)]),
    "RGBX": (lambda: image("RGBX", [(1, 2, 3, 99)]), "RGB", [(1, 2, 3)]),
    "CMYK": (lambda: image("CMYK", [(255, 0, 0, 0), (0, 0, 0, 255), (100, 50, 0, 128)]), "RGB",
             [(0, 255, 255), (0, 0, 0), (77, 102, 127)]),  # (255 - c) (255 - k) / 255
    "YCbCr": (lambda: image("YCbCr", [(255, 128, 128), (0, 128, 128)]), "RGB", [(255, 255, 255), (0, 0, 0)]),
    "HSV": (lambda: image("HSV", [(0, 255, 255), (85, 255, 255), (0, 0, 200)]), "RGB",
            [(255, 0, 0), (0, 255, 0), (200, 200, 200)]),
    "I;16": (lambda: image("I;16", [0, 257, 1000, 32768, 65535]), "L", [0, 1, 4, 128, 255]),  # round(v / 257)
    "I;16B": (lambda: image("I;16B", [0, 514, 65535]), "L", [0, 2, 255]),
    "I;16L": (lambda: image("I;16L", [0, 65535]), "RGB", [(0, 0, 0), (255, 255, 255)]),
    "I;16N": (lambda: image("I;16N", [128, 65407]), "L", [0, 255]),  # 0.498 and 254.5: rounded to nearest
    "I": (lambda: image("I", [0, 257, 65535]), "L", [0, 1, 255]),  # 32-bit integers holding 16-bit samples
    "F": (lambda: image("F", [0.0, 0.2, 0.5, 1.0]), "L", [0, 51, 128, 255]),  # [0, 1]
}


@pytest.mark.parametrize("case", CASES, ids=CASES)
def test_each_mode_becomes_8_bit_with_its_real_range(case):
    make, target, expected = CASES[case]
    out = to_mode(make(), target)
    assert out.mode == target
    want = torch.tensor(expected, dtype=torch.uint8)
    assert torch.equal(torch.from_numpy(np.asarray(out)[0].copy()), want)


def test_every_mode_pillow_names_is_converted_or_refused():
    modes = set(getattr(Image, "MODES", MODES))
    assert modes - {c.split("-")[0] for c in CASES} == {"LAB"}  # every mode but the refused one has a case above
    assert set(MODES) == modes - {"LAB"}


@pytest.mark.parametrize("mode,pixels,message", [
    ("LAB", [(255, 128, 128)], "x.tif: LAB needs a colour profile to become RGB"),
    ("I", [0, 70000], "x.tif: mode I (32-bit integer) values span [0, 70000]; aelab reads them as 16-bit samples"),
    ("I", [-1, 5], "x.tif: mode I (32-bit integer) values span [-1, 5]"),
    ("F", [0.0, 255.0], "x.tif: mode F (float) values span [0, 255]; aelab reads float images as [0, 1]"),
    ("F", [0.0, float("nan")], "x.tif: mode F (float) values span [0, 0]"),
], ids=["lab", "i-beyond-16-bit", "i-negative", "f-beyond-1", "f-nan"])
def test_modes_without_a_faithful_conversion_are_refused_by_name(mode, pixels, message):
    with pytest.raises(DataError) as info:
        to_mode(image(mode, pixels), "RGB", "x.tif")
    assert message in str(info.value)


def test_a_folder_of_16_bit_pngs_is_read_with_its_full_range(tmp_path):
    """The reported bug: 16-bit greyscale PNGs came out white (converted as if 8-bit)."""
    values = np.arange(64, dtype=np.int64).reshape(8, 8) * 1040  # 0 ... 65520
    for i in range(4):
        Image.fromarray(values.astype(np.uint16)).save(tmp_path / f"{i}.png")
    assert Image.open(tmp_path / "0.png").mode == "I;16"
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, channels=1, test_fraction=0.25, batch_size=2)
    dm.setup()
    images = torch.cat([dm.splits[s].images for s in ("train", "val", "test")])
    expected = torch.from_numpy(((values * 255 + 32767) // 65535).astype(np.uint8))
    assert images.shape == (4, 1, 8, 8)
    for img in images:
        assert torch.equal(img[0], expected)
    assert expected[0, 0] == 0 and expected[0, 1] == 4 and expected[-1, -1] == 255  # 1040 / 257 = 4.05


def test_a_folder_with_a_refused_mode_names_the_file_before_training(tmp_path):
    Image.new("RGB", (8, 8), (1, 2, 3)).save(tmp_path / "good.tif")
    Image.new("LAB", (8, 8), (50, 128, 128)).save(tmp_path / "lab.tif")
    dm = ImageFolderDataModule(str(tmp_path), image_size=8, channels=3, test_fraction=0.5)
    with pytest.raises(DataError, match=r"1 unreadable image\(s\) in .*: lab.tif \(LAB needs a colour profile"):
        dm.setup()
