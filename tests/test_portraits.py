"""The cross-domain rows: real portraits from scikit-image's wheel as image folders, and RESULTS' verdict on the
lesson's claim (experiments/run.py testing a flowers preset on them: tests/test_experiments.py, the tiny runner)."""

from __future__ import annotations

import sys

import numpy as np
from PIL import Image

from aelab.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from experiments.portraits import FOLDERS, cross_domain_section, write_portraits  # noqa: E402


def test_portraits_are_64px_rgb_folders_written_the_same_every_time(tmp_path):
    first, second = write_portraits(tmp_path / "a"), write_portraits(tmp_path / "b")
    assert list(first) == list(FOLDERS) == ["portraits_photos", "portraits_faces"]
    counts = {name: len(list(folder.glob("*.png"))) for name, folder in first.items()}
    assert counts == {"portraits_photos": 66, "portraits_faces": 100}
    for name, folder in first.items():
        for path in sorted(folder.glob("*.png")):
            image = Image.open(path)
            assert (image.size, image.mode) == ((64, 64), "RGB"), path
            assert path.read_bytes() == (second[name] / path.name).read_bytes(), path  # seeded crops
    from skimage import data

    whole = np.asarray(Image.open(first["portraits_photos"] / "000.png"))
    expected = np.asarray(Image.fromarray(data.astronaut()).resize((64, 64), Image.Resampling.LANCZOS))
    assert np.array_equal(whole, expected)  # image 0 is the astronaut photograph, whole
    camera = np.asarray(Image.open(first["portraits_photos"] / "033.png"))
    assert np.array_equal(camera[..., 0], camera[..., 2])  # the cameraman is greyscale, repeated to RGB


class Run:
    def __init__(self, name, psnr, bicubic, state="succeeded"):
        self.name, self.state = name, state
        self.metrics = {"test/psnr": psnr, "test/psnr_baseline_bicubic": bicubic}


def test_the_claim_holds_where_the_margin_over_bicubic_shrinks_on_portraits():
    jobs = [Run("sr_a", 28.0, 26.0), Run("sr_b", 22.0, 21.0)]
    evals = [Run("cross_sr_a_on_portraits_photos", 25.5, 25.0), Run("cross_sr_a_on_portraits_faces", 31.0, 28.0),
             Run("cross_sr_b_on_portraits_photos", 20.0, 18.0)]
    lines = cross_domain_section(jobs, evals, ("sr_a", "sr_b", "sr_missing"))
    rows = [line for line in lines if line.startswith("| sr_")]
    assert rows == [
        "| sr_a | 28.00 / 26.00 (+2.00) | 25.50 / 25.00 (+0.50) | 31.00 / 28.00 (+3.00) | photos: holds, "
        "faces: does not hold |",
        "| sr_b | 22.00 / 21.00 (+1.00) | 20.00 / 18.00 (+2.00) | not run | photos: does not hold |"]
    assert cross_domain_section([], [], ("sr_a",))[-1].startswith("Not run")

