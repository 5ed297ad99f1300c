"""Reference reconstructions that need no training, scored on the same batches and metrics as the model.

identity  the corrupted input itself (nearest-neighbour upsampled to the target size: the pixels as they are)
bicubic   the corrupted input upsampled with bicubic interpolation (only differs from identity for super-resolution)
pca       the corrupted input, brought to the target size, projected on the top-k principal components of clean
          training images (k = the model's latent size: a linear autoencoder with the same bottleneck)
mean      the dataset-mean training image, whatever the input

Pure functions on tensors; `aelab.callbacks.baselines.Baselines` wires them to the validation and test steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

NAMES = ("identity", "bicubic", "pca", "mean")
PSNR_CAP_DB = 100.0  # a perfect reconstruction (mse 0) scores 100 dB instead of inf


def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1] (data range 1): torchmetrics' definition, as the module's metric
    computes it, capped at PSNR_CAP_DB."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    per_image = peak_signal_noise_ratio(pred.float().clamp(0, 1), target.float(), data_range=1.0, dim=(1, 2, 3),
                                        reduction="none")
    return per_image.clamp(max=PSNR_CAP_DB)


def resize(x: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Bring a batch to `size` (H, W); unchanged when it already has it. Bicubic overshoots, so it is clamped."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if mode == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=mode, align_corners=False).clamp(0, 1)


def identity(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return resize(x, size, "nearest")


def bicubic(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return resize(x, size, "bicubic")


@dataclass
class PCA:
    """Principal subspace of flattened images: `mean` [D], `components` [k, D] with orthonormal rows."""

    mean: torch.Tensor
    components: torch.Tensor

    @property
    def k(self) -> int:
        return self.components.shape[0]

    def to(self, device) -> "PCA":
        return PCA(self.mean.to(device), self.components.to(device))

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Project a batch [B, ...] on the subspace and map back; same shape as `x`, clamped to [0, 1]."""
        flat = x.flatten(1).float() - self.mean
        recon = (flat @ self.components.T) @ self.components + self.mean
        return recon.clamp(0, 1).reshape(x.shape)


def eigh_1thread(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.linalg.eigh on one thread: MKL's multithreaded eigensolver slowed a 784 x 784 problem from 0.2 s to
    over 20 s when the cores were busy with other work; the matrices here are small, one core is enough."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return torch.linalg.eigh(matrix)
    finally:
        torch.set_num_threads(threads)


def fit_pca(images: torch.Tensor, k: int) -> PCA:
    """Top-k principal components of a batch of images [N, ...] (float in [0, 1]).

    k is capped at the rank the data can have (min(N - 1, D), at least 1). Solved as an eigenproblem of the smaller
    of the two Gram matrices (D x D covariance for MNIST, N x N for 64x64 RGB images): the products in float32 (the
    cost), the small symmetric eigenproblem in float64.
    """
    x = images.flatten(1).float()
    n, d = x.shape
    mean = x.double().mean(0).float()
    xc = x - mean
    k = max(1, min(int(k), d, max(n - 1, 1)))
    if n >= d:
        _, evecs = eigh_1thread((xc.T @ xc).double())  # ascending
        components = evecs[:, -k:].flip(1).T.float()
    else:
        evals, evecs = eigh_1thread((xc @ xc.T).double())
        evals, evecs = evals[-k:].flip(0), evecs[:, -k:].flip(1)
        # right singular vectors from left ones: v = X^T u / sigma (directions with no variance are dropped)
        keep = evals > evals[0] * 1e-10
        components = ((xc.T @ evecs[:, keep].float()) / evals[keep].sqrt().float()).T
        components = components / components.norm(dim=1, keepdim=True)  # float32 drift of the norm
    return PCA(mean, components.contiguous())


def mean_image(images: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Mean of a uint8 or float image stack [N, C, H, W] in [0, 1], in chunks (no full float copy)."""
    total = torch.zeros(images.shape[1:], dtype=torch.float64)
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]
        part = part.double() / 255 if part.dtype == torch.uint8 else part.double()
        total += part.sum(0)
    return (total / max(len(images), 1)).float()


def reconstructions(inputs: torch.Tensor, target_shape: tuple[int, int, int], pca: PCA | None = None,
                    mean: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every applicable baseline's output for a corrupted batch, at the target's (C, H, W).

    bicubic only for super-resolution (input smaller than target; otherwise it is the identity), pca and mean only
    when fitted. Inputs with another channel count than the target are not handled (no corruption changes it).
    """
    size = tuple(target_shape[-2:])
    out = {"identity": identity(inputs, size)}
    if tuple(inputs.shape[-2:]) != size:
        out["bicubic"] = bicubic(inputs, size)
    if pca is not None:
        out["pca"] = pca.reconstruct(out.get("bicubic", out["identity"]))
    if mean is not None:
        out["mean"] = mean.to(inputs.device).expand(len(inputs), *mean.shape)
    return out


def relevant(names, super_resolution: bool, corrupted: bool) -> str | None:
    """The baseline a model must beat: bicubic for super-resolution, the corrupted input for other corruptions,
    PCA with the same bottleneck for plain autoencoders (the input is the target there: identity would be perfect)."""
    for name in (("bicubic",) if super_resolution else ("identity",) if corrupted else ("pca",)):
        if name in names:
            return name
    return None
