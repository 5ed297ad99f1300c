"""Domain feature networks: the feature space sample-quality metrics are measured in (aelab.sample_quality).

Inception features mean little on 28x28 digits, so each labelled dataset gets a small classifier that aelab trains
itself: a CNN (two conv blocks, a 128-unit penultimate layer whose activations are the features), seeded, trained on
the CPU on the official training split only, scored on the test split. It is cached under AELAB_CACHE_DIR/features/,
keyed by checksums of the decoded training and test tensors and by the recipe, so every run of every machine with
the same data measures in the same space; it is built on first use (logged) or ahead of time by `aelab-features`.

Test images that are binary (binarized MNIST) while the training images are grey make the recipe binarize each
training batch afresh, seeded, so the network learns on images of the kind it scores.

`inception_space(path)` instead reads torchvision's Inception-v3 weights from a local file (never downloaded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import ConfigError, DataError
from aelab.files import write_atomic
from aelab.seeds import derive_seed, seeded_generator

log = logging.getLogger("aelab")
ARCHITECTURE = "cnn-bn-v1"  # part of the cache key: a change of FeatureNet must change it
PASSES = 180_000  # training images seen by the full recipe (3 epochs of MNIST), at least 2 epochs of any dataset
SMOKE_IMAGES = 2000  # the smoke recipe (2 epochs of them): tests and runs whose test is limited to a few batches


@dataclass(frozen=True)
class Recipe:
    """How a feature network is trained; every field is part of its cache key."""

    epochs: int
    max_images: int | None = None  # a seeded class-mixed draw of this many training images (None: all)
    batch_size: int = 256
    lr: float = 3e-3  # the peak of a one-cycle schedule
    width: int = 32
    features: int = 128
    seed: int = 0
    architecture: str = ARCHITECTURE

    @property
    def name(self) -> str:
        return "smoke" if self.max_images is not None else "full"


def recipe_for(n_train: int, smoke: bool = False) -> Recipe:
    """The full recipe (PASSES images seen, at least 2 epochs, at most 60) or the smoke one (SMOKE_IMAGES, 2
    epoch)."""
    if smoke:
        return Recipe(epochs=2, max_images=min(SMOKE_IMAGES, n_train))
    return Recipe(epochs=max(2, min(60, math.ceil(PASSES / max(1, n_train)))))


class FeatureNet(nn.Module):
    """Images in [0, 1] [B, C, H, W] -> `features` activations (penultimate layer) -> class logits; batch norm
    makes three epochs of MNIST enough for 99 %."""

    def __init__(self, channels: int, num_classes: int, width: int = 32, features: int = 128):
        super().__init__()
        self.num_features = features  # torchmetrics' FID / KID read this name
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(7), nn.Flatten(), nn.Linear(2 * width * 49, features), nn.ReLU())
        self.head = nn.Linear(features, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.float() * 2 - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@dataclass
class FeatureSpace:
    """A feature extractor and what names it: `name` (dataset, recipe and key), `accuracy` (its test accuracy, None
    for Inception), `info` (everything sample_quality.json records about it)."""

    net: nn.Module
    name: str
    accuracy: float | None
    info: dict

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, chunk: int = 1000) -> torch.Tensor:
        """Features [N, D] of images in [0, 1] (float or uint8), computed in chunks on the net's device."""
        device = next(self.net.parameters()).device
        out = []
        for i in range(0, len(images), chunk):
            x = images[i:i + chunk].to(device)
            x = x.float() / 255 if x.dtype == torch.uint8 else x.float()
            out.append(self.net.features(x).float())
        return torch.cat(out) if out else torch.empty(0, 0)


def checksum(*tensors: torch.Tensor) -> str:
    h = hashlib.sha1()
    for t in tensors:
        h.update(str(tuple(t.shape)).encode())
        h.update(t.contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def is_binary(images: torch.Tensor) -> bool:
    return bool(((images == 0) | (images == 255)).all())


def _binarize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    white = torch.rand(images.shape, generator=generator) * 255 < images.float()
    return white.to(torch.uint8).mul_(255)


def train_split(dm) -> tuple[torch.Tensor, torch.Tensor]:
    """The official training split (the run's validation images included, its test images never)."""
    if not dm.in_memory:
        raise ConfigError(f"{dm.name}: a feature network needs the training split in memory; set "
                          "data.in_memory=true or callbacks.sample_quality=null")
    split = dm.load("train")
    return split.decoded(), split.labels


@torch.no_grad()
def accuracy(net: FeatureNet, images: torch.Tensor, labels: torch.Tensor, chunk: int = 1000) -> float:
    net.eval()
    hits = sum(int((net(images[i:i + chunk].float() / 255).argmax(1) == labels[i:i + chunk]).sum())
               for i in range(0, len(images), chunk))
    return hits / max(1, len(images))


def train(images: torch.Tensor, labels: torch.Tensor, num_classes: int, recipe: Recipe,
          binarize: bool = False) -> FeatureNet:
    """A FeatureNet trained with Adam on uint8 images, on the CPU, every random draw seeded from the recipe (also
    when called where gradients are off: at the end of a Lightning test)."""
    with torch.inference_mode(False), torch.enable_grad():
        return _train(images.clone(), labels.clone(), num_classes, recipe, binarize)


def _train(images: torch.Tensor, labels: torch.Tensor, num_classes: int, recipe: Recipe, binarize: bool) -> FeatureNet:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(recipe.seed, "features", "init"))
        net = FeatureNet(images.shape[1], num_classes, recipe.width, recipe.features)
    opt = torch.optim.Adam(net.parameters(), lr=recipe.lr)
    steps = recipe.epochs * math.ceil(len(images) / recipe.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, recipe.lr, total_steps=steps, pct_start=0.15)
    net.train()
    for epoch in range(recipe.epochs):
        order = torch.randperm(len(images), generator=seeded_generator("cpu", recipe.seed, "features", epoch))
        noise = seeded_generator("cpu", recipe.seed, "features", "binarize", epoch)
        for index in order.split(recipe.batch_size):
            x = images[index]
            x = (_binarize(x, noise) if binarize else x).float() / 255
            loss = F.cross_entropy(net(x), labels[index])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            schedule.step()
    return net.eval()


def cache_root(dm) -> Path:
    import os

    root = dm.cache_dir or Path(os.environ.get("AELAB_CACHE_DIR", ".cache")).expanduser()
    return Path(root) / "features"


def feature_space(dm, smoke: bool = False, device: torch.device | str = "cpu") -> FeatureSpace:
    """The datamodule's feature network: read from the cache, or trained (and cached) on first use."""
    spec = dm.spec
    if spec.num_classes is None or spec.num_classes < 2:
        raise DataError(f"{dm.name}: a domain feature network needs class labels, and the data has none; use "
                        "callbacks.sample_quality.features=inception with a local weights file, or "
                        "callbacks.sample_quality=null")
    images, labels = train_split(dm)
    recipe = recipe_for(len(images), smoke)
    test_images, test_labels = dm.all_of("test", recipe.max_images)  # the smoke recipe scores as many as it trains on
    if recipe.max_images is not None and recipe.max_images < len(images):
        keep = torch.randperm(len(images), generator=seeded_generator("cpu", recipe.seed, "features", "subset"))
        keep = keep[:recipe.max_images].sort().values
        images, labels = images[keep], labels[keep]
    binarize = is_binary(test_images) and not is_binary(images)
    key_text = json.dumps({"train": checksum(images, labels), "test": checksum(test_images, test_labels),
                           "recipe": asdict(recipe), "binarize": binarize, "classes": spec.num_classes},
                          sort_keys=True)
    key = hashlib.sha1(key_text.encode()).hexdigest()[:16]
    path = cache_root(dm) / f"{dm.name}-{recipe.name}-{key}.pt"
    name = f"{dm.name}-classifier-{recipe.name}-{key[:8]}"
    net = FeatureNet(images.shape[1], spec.num_classes, recipe.width, recipe.features)
    if path.exists():
        try:
            stored = torch.load(path, weights_only=True)
            net.load_state_dict(stored["state"])
            info = json.loads(stored["info"])
            return FeatureSpace(net.eval().to(device), name, info["test_accuracy"], info)
        except Exception:  # a damaged cache file is rebuilt, never trusted
            path.unlink(missing_ok=True)
    log.info("aelab: training the %s feature network (%s recipe: %d images, %d epochs) -> %s", dm.name, recipe.name,
             len(images), recipe.epochs, path)
    start = time.perf_counter()
    net = train(images, labels, spec.num_classes, recipe, binarize)
    seconds = time.perf_counter() - start
    acc = accuracy(net, test_images, test_labels)
    info = {"name": name, "kind": "domain classifier", "dataset": dm.name, "key": key, "recipe": asdict(recipe),
            "binarized_training": binarize, "train_images": len(images), "test_images": len(test_images),
            "test_accuracy": acc, "train_seconds": round(seconds, 1), "file": str(path)}
    log.info("aelab: %s feature network: test accuracy %.4f after %.0f s", dm.name, acc, seconds)
    write_atomic(path, lambda f: torch.save({"state": net.state_dict(), "info": json.dumps(info)}, f))
    return FeatureSpace(net.to(device), name, acc, info)


class InceptionFeatures(nn.Module):
    """torchvision's Inception-v3 up to its 2048-d pool: images resized to 299, grey repeated to RGB, ImageNet
    normalisation. Not the TensorFlow FID network: its numbers compare among aelab runs, not with papers."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.num_features = net, 2048
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().expand(-1, 3, -1, -1) if x.shape[1] == 1 else x.float()
        x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        return self.net((x - self.mean) / self.std)


def inception_space(weights: str | None, device: torch.device | str = "cpu") -> FeatureSpace:
    """Inception-v3 features from a local torchvision state-dict file; a missing or unreadable file is one line."""
    import torchvision

    if not weights or not Path(weights).expanduser().is_file():
        raise ConfigError(f"callbacks.sample_quality.inception_weights={weights!r} is not a file; Inception features "
                          "need torchvision's inception_v3 weights saved locally (aelab never downloads them); point "
                          "to the .pth file or use callbacks.sample_quality.features=domain")
    path = Path(weights).expanduser()
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    try:
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except Exception as e:
        raise ConfigError(f"callbacks.sample_quality.inception_weights={str(path)!r} does not hold torchvision's "
                          f"inception_v3 state dict ({type(e).__name__}); save one with "
                          "torch.save(model.state_dict(), path)") from None
    net.fc = nn.Identity()
    info = {"name": f"inception_v3-{checksum(*net.state_dict().values())[:8]}", "kind": "inception_v3",
            "file": str(path), "test_accuracy": None}
    return FeatureSpace(InceptionFeatures(net.eval()).to(device).eval(), info["name"], None, info)


def main(argv: list[str] | None = None) -> int:
    """aelab-features DATA [DATA ...] [--smoke]: build (or confirm) the feature networks ahead of time."""
    import argparse
    import sys

    from hydra.utils import instantiate

    from aelab.config import compose
    from aelab.errors import AelabError

    parser = argparse.ArgumentParser(prog="aelab-features", description=main.__doc__)
    parser.add_argument("data", nargs="+", help="data configs: mnist, fashion_mnist, binarized_mnist, flowers, ...")
    parser.add_argument("--smoke", action="store_true", help="the smoke recipe (runs whose test is limited)")
    parser.add_argument("overrides", nargs="*", default=[], help=argparse.SUPPRESS)
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        for data in args.data:
            if "=" in data:
                continue
            cfg = compose([f"data={data}", *[a for a in args.data + extra if "=" in a]])
            dm = instantiate(cfg.data)
            dm.setup()
            space = feature_space(dm, smoke=args.smoke)
            print(f"{data}: {space.name} test accuracy {space.accuracy:.4f} ({space.info['file']})")
    except AelabError as e:
        print(f"aelab-features: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # hydra's missing config group and friends
        print(f"aelab-features: error: {type(e).__name__}: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    return 0
