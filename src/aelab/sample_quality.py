"""Sample-quality metrics between a reference set and a scored set, both given as features [N, D] of a feature
space (aelab.features):

    fid        Fréchet distance between Gaussians fitted to each set (torchmetrics' FrechetInceptionDistance)
    kid        kernel distance: unbiased MMD^2 with the cubic polynomial kernel, mean over random subsets
               (torchmetrics' KernelInceptionDistance, its subsets drawn from a seeded stream)
    precision  share of scored points inside the reference manifold (Kynkäänniemi et al., 2019): the union of
               balls around each reference point reaching its k-th nearest reference neighbour
    recall     share of reference points inside the scored set's manifold, built the same way
    density    how many reference balls hold each scored point, divided by k, averaged (Naeem et al., 2020)
    coverage   share of reference points whose ball holds at least one scored point (Naeem et al., 2020)

torchmetrics takes a feature module; it receives features computed once here through `Given`, an identity module,
so every metric of a set reads the same features. The manifold metrics (which no installed library offers) share
one pass over the reference x scored distance matrix, in chunks.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from aelab.seeds import derive_seed

CHUNK = 1024


class Given(nn.Module):
    """Features already computed: torchmetrics' FID / KID accumulate what this returns, i.e. its input."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def fid(real: torch.Tensor, fake: torch.Tensor) -> float:
    from torchmetrics.image.fid import FrechetInceptionDistance

    metric = FrechetInceptionDistance(feature=Given(real.shape[1]), reset_real_features=False)
    metric.update(real.double().cpu(), real=True)
    metric.update(fake.double().cpu(), real=False)
    return float(metric.compute())


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) over `subsets` draws of min(subset_size, both set sizes) points of each set."""
    from torchmetrics.image.kid import KernelInceptionDistance

    size = min(subset_size, len(real), len(fake))
    with warnings.catch_warnings():  # it warns that it keeps every feature: that is what it is given here
        warnings.simplefilter("ignore", UserWarning)
        metric = KernelInceptionDistance(feature=Given(real.shape[1]), subsets=subsets, subset_size=size)
    metric.update(real.float().cpu(), real=True)  # float32: its kernels are the callback's main cost
    metric.update(fake.float().cpu(), real=False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "kid"))
        mean, std = metric.compute()
    return float(mean), float(std)


def knn_radii(x: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each point to its k-th nearest other point of the same set."""
    if len(x) <= k:
        raise ValueError(f"k-nearest-neighbour radii need more than k={k} points, got {len(x)}")
    x = x.float()
    out = [torch.cdist(x[i:i + CHUNK], x).topk(k + 1, dim=1, largest=False).values[:, k]
           for i in range(0, len(x), CHUNK)]
    return torch.cat(out)


def manifold(real: torch.Tensor, fake: torch.Tensor, k: int = 5,
             real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """precision, recall, density and coverage of `fake` against `real` (k nearest neighbours)."""
    real, fake = real.float(), fake.float().to(real.device)
    r_real = knn_radii(real, k) if real_radii is None else real_radii.to(real.device)
    r_fake = knn_radii(fake, k)
    in_real_balls = torch.zeros(len(fake), device=real.device)  # per fake point: reference balls holding it
    recalled = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    covered = torch.zeros(len(real), dtype=torch.bool, device=real.device)
    for i in range(0, len(real), CHUNK):
        d = torch.cdist(real[i:i + CHUNK], fake)  # [chunk of reference, scored]
        inside = d <= r_real[i:i + CHUNK, None]
        in_real_balls += inside.sum(0)
        covered[i:i + CHUNK] = inside.any(1)
        recalled[i:i + CHUNK] = (d <= r_fake[None]).any(1)
    return {"precision": float((in_real_balls > 0).float().mean()), "recall": float(recalled.float().mean()),
            "density": float(in_real_balls.mean() / k), "coverage": float(covered.float().mean())}


def score(real: torch.Tensor, fake: torch.Tensor, k: int = 5, kid_subsets: int = 100, kid_subset_size: int = 1000,
          seed: int = 0, real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Every metric of the module docstring, by name (and kid_std)."""
    kid_mean, kid_std = kid(real, fake, kid_subsets, kid_subset_size, seed)
    return {"fid": fid(real, fake), "kid": kid_mean, "kid_std": kid_std, **manifold(real, fake, k, real_radii)}


METRICS = ("fid", "kid", "precision", "recall", "density", "coverage")
