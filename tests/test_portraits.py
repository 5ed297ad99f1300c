"""The cross-domain rows: real portraits from scikit-image's wheel as image folders, the flowers super-resolution
presets tested on them by experiments/run.py, and RESULTS' verdict on the lesson's claim."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aelab.config import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT))
from experiments.portraits import FOLDERS, cross_domain_section, write_portraits  # noqa: E402

RUNNER = REPO_ROOT / "experiments" / "run.py"


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


@pytest.mark.slow
def test_runner_tests_a_flowers_preset_on_the_portraits(tmp_path):
    out, runs = tmp_path / "RESULTS.md", tmp_path / "runs"
    proc = subprocess.run([sys.executable, str(RUNNER), "--tiny", "--only", "superres_flowers_x4", "--out", str(out),
                           "--runs-dir", str(runs)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    section = out.read_text().split("## Cross-domain", 1)[1]
    row = next(line for line in section.splitlines() if line.startswith("| superres_flowers_x4 | "))
    for folder in FOLDERS:
        metrics = json.loads((runs / f"cross_superres_flowers_x4_on_{folder}" / "metrics.json").read_text())
        model, bicubic = metrics["test/psnr"], metrics["test/psnr_baseline_bicubic"]
        assert f"{model:.2f} / {bicubic:.2f} ({model - bicubic:+.2f})" in row
    config = (runs / "cross_superres_flowers_x4_on_portraits_faces" / "config.yaml").read_text()
    assert "ImageFolderDataModule" in config and str(runs / "portraits" / "portraits_faces") in config
