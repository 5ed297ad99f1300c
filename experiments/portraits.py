"""Real portraits as image folders, from the photographs scikit-image ships in its wheel (nothing is downloaded):
the out-of-domain test of the flowers super-resolution models (experiments/run.py, "Cross-domain").

    pip install -e ".[portraits]"        # scikit-image
    python experiments/portraits.py OUT  # writes OUT/portraits_photos/ and OUT/portraits_faces/

- `portraits_photos`: the astronaut (Eileen Collins, RGB) and the cameraman (greyscale, repeated to RGB), each whole
  at 64x64 and as 32 seeded 64x64 crops of the photograph resized to 128 and 256 pixels (faces, hands, background
  at three scales, as the flowers copy holds whole photographs shrunk to 64x64): 66 images.
- `portraits_faces`: the 100 faces of scikit-image's Labeled Faces in the Wild subset (25x25 greyscale; its other 100
  images are not faces), enlarged to 64x64 with Lanczos filtering: faces, but with no detail finer than 25 pixels
  could hold.

Each folder is one class (a flat folder); every image is a 64x64 RGB PNG. The crops are drawn from a fixed seed, so
the command writes the same files on every machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 64
CROPS_PER_SCALE = 16
SCALES = (128, 256)
SEED = 0
FACES = 100  # lfw_subset(): the first 100 images are faces
FOLDERS = ("portraits_photos", "portraits_faces")


def skimage_data():
    from skimage import data  # ImportError without scikit-image: main() says what to install

    return data


def rgb(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:  # lfw_subset holds floats in [0, 1]
        array = np.clip(np.rint(array * 255), 0, 255).astype(np.uint8)
    image = Image.fromarray(array)
    return image.convert("RGB")


def photo_images(photo: Image.Image, rng: np.random.Generator) -> list[Image.Image]:
    out = [photo.resize((SIZE, SIZE), Image.Resampling.LANCZOS)]
    for scale in SCALES:
        big = photo.resize((scale, scale), Image.Resampling.LANCZOS)
        for _ in range(CROPS_PER_SCALE):
            x, y = (int(v) for v in rng.integers(0, scale - SIZE + 1, size=2))
            out.append(big.crop((x, y, x + SIZE, y + SIZE)))
    return out


def write_portraits(out: Path) -> dict[str, Path]:
    """Write both folders under `out` (replacing their PNGs); returns {name: folder}."""
    data = skimage_data()
    rng = np.random.default_rng(SEED)
    photos, faces = FOLDERS
    sets = {photos: [im for name in ("astronaut", "camera") for im in photo_images(rgb(getattr(data, name)()), rng)],
            faces: [rgb(face).resize((SIZE, SIZE), Image.Resampling.LANCZOS) for face in data.lfw_subset()[:FACES]]}
    folders = {}
    for name, images in sets.items():
        folder = Path(out) / name
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("*.png"):
            old.unlink()
        for i, image in enumerate(images):
            image.save(folder / f"{i:03d}.png")
        folders[name] = folder
    return folders


def margin(metrics: dict) -> tuple[float, float, float] | None:
    """(model PSNR, bicubic PSNR, model - bicubic) of a run's test metrics, or None."""
    model, bicubic = metrics.get("test/psnr"), metrics.get("test/psnr_baseline_bicubic")
    return None if model is None or bicubic is None else (model, bicubic, model - bicubic)


def cross_domain_section(jobs: list, evals: list, presets: tuple[str, ...], folders: tuple[str, ...] = FOLDERS,
                         name=lambda preset, folder: f"cross_{preset}_on_{folder}") -> list[str]:
    """RESULTS.md's cross-domain table: each flowers super-resolution preset's margin over bicubic on its own test
    split and on each portraits folder, and whether the margin shrinks there (the lesson's claim)."""
    out = ["## Cross-domain: flowers super-resolution on real portraits (test PSNR in dB)", "",
           "The lesson: \"a super-resolution network trained on flowers will not work well on portraits\". Each "
           "flowers preset's checkpoint is tested (`aelab-eval ckpt_path=… data=image_folder`) on the portraits "
           "that `python experiments/portraits.py OUT` makes from scikit-image's photographs (half of each folder, "
           "seeded): *photos* are the astronaut and the cameraman, whole and cropped at three scales; *faces* are "
           "LFW faces enlarged from 25x25. Cells: model / bicubic (model − bicubic). The claim holds for a row "
           "where the margin over bicubic is smaller on portraits than on flowers.", ""]
    by_name = {j.name: j for j in [*jobs, *evals]}
    rows = []
    for preset in presets:
        trained = by_name.get(preset)
        if trained is None or trained.state != "succeeded":
            continue
        home = margin(trained.metrics)
        cells, verdicts = [], []
        for folder in folders:
            job = by_name.get(name(preset, folder))
            there = margin(job.metrics) if job is not None and job.state == "succeeded" else None
            cells.append("not run" if there is None else f"{there[0]:.2f} / {there[1]:.2f} ({there[2]:+.2f})")
            if there is not None and home is not None:
                verdicts.append(f"{folder.removeprefix('portraits_')}: "
                                + ("holds" if there[2] < home[2] else "does not hold"))
        flowers = "–" if home is None else f"{home[0]:.2f} / {home[1]:.2f} ({home[2]:+.2f})"
        rows.append(f"| {preset} | {flowers} | " + " | ".join(cells) + f" | {', '.join(verdicts) or '–'} |")
    if not rows:
        return out + ["Not run (needs the flowers super-resolution presets and scikit-image)."]
    heads = [f.removeprefix("portraits_") for f in folders]
    return out + ["| preset | flowers (own test split) | " + " | ".join(heads) + " | claim |",
                  "|---" * (len(folders) + 3) + "|", *rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder to write portraits_photos/ and portraits_faces/ into")
    args = parser.parse_args(argv)
    try:
        folders = write_portraits(args.out)
    except ImportError:
        print("portraits.py: error: scikit-image is not installed; pip install -e \".[portraits]\"", file=sys.stderr)
        return 1
    for name, folder in folders.items():
        print(f"{name}: {len(list(folder.glob('*.png')))} images in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
