"""Ex-post samplers: distributions over a model's flat codes, fitted after training on the codes of the training
images, that make every model with a decoder of flat codes generative (the idea of pythae's samplers).

Each is a separate object: `fit(codes)` once, then `sample(n, generator)` draws [n, D] codes for `model.generate`.
`GaussianSampler` fits one Gaussian with full covariance, `MixtureSampler` a k-component Gaussian mixture
(scikit-learn's GaussianMixture, full covariances, seeded). `PriorSampler` draws from the model's own prior
(capabilities.prior: the standard normal of a VAE, or the prior a model learns) and fits nothing.
"""

from __future__ import annotations

import torch

from aelab.errors import ConfigError, check

JITTER = 1e-6  # added to covariance diagonals, relative to their mean variance: codes may span fewer dimensions


class Sampler:
    name = "sampler"

    def fit(self, codes: torch.Tensor) -> "Sampler":
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError


class PriorSampler(Sampler):
    """The model's own prior (model.prior_codes), labels passed through for conditional models."""

    name = "prior"

    def __init__(self, model, labels: torch.Tensor | None = None):
        check(model.capabilities.prior is not None,
              f"{type(model).__name__} has no prior (capabilities.prior is None); use a fitted sampler")
        self.model, self.labels = model, labels

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        labels = None if self.labels is None else self.labels[:n]
        return self.model.prior_codes(n, generator, labels)


class GaussianSampler(Sampler):
    """N(mean, covariance) of the codes, covariance in full (float64 for the Cholesky factor)."""

    name = "gaussian"

    def fit(self, codes: torch.Tensor) -> "GaussianSampler":
        check(len(codes) >= 2, f"a Gaussian sampler needs at least 2 codes, got {len(codes)}")
        z = codes.detach().double().flatten(1)
        self.mean = z.mean(0)
        cov = torch.cov(z.T).reshape(z.shape[1], z.shape[1])
        scale = float(cov.diagonal().mean().clamp_min(1e-12))
        self.chol = torch.linalg.cholesky(cov + JITTER * scale * torch.eye(len(cov), dtype=cov.dtype))
        self.device, self.dtype = codes.device, codes.dtype
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn((n, len(self.mean)), generator=generator, dtype=torch.float64,
                          device=generator.device).cpu()
        return (self.mean + eps @ self.chol.T).to(self.device, self.dtype)


class MixtureSampler(Sampler):
    """A Gaussian mixture of `components` full-covariance components (scikit-learn, k-means initialisation,
    `seed`); with fewer codes than components it keeps as many components as codes allow."""

    name = "gmm"

    def __init__(self, components: int = 10, seed: int = 0, max_iter: int = 100):
        check(isinstance(components, int) and components >= 1,
              f"callbacks.sample_quality.components must be an integer >= 1, got {components!r}")
        self.components, self.seed, self.max_iter = components, int(seed), int(max_iter)

    def fit(self, codes: torch.Tensor) -> "MixtureSampler":
        from sklearn.mixture import GaussianMixture

        z = codes.detach().double().flatten(1).cpu()
        k = min(self.components, max(1, len(z) // 2))
        scale = float(z.var(0).mean().clamp_min(1e-12)) if len(z) > 1 else 1.0
        self.gmm = GaussianMixture(k, covariance_type="full", reg_covar=JITTER * scale, max_iter=self.max_iter,
                                   random_state=self.seed).fit(z.numpy())
        self.weights = torch.as_tensor(self.gmm.weights_, dtype=torch.float64)
        self.means = torch.as_tensor(self.gmm.means_, dtype=torch.float64)
        self.chols = torch.linalg.cholesky(torch.as_tensor(self.gmm.covariances_, dtype=torch.float64))
        self.device, self.dtype = codes.device, codes.dtype
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        cpu = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=generator,
                                                              device=generator.device)))
        which = torch.multinomial(self.weights, n, replacement=True, generator=cpu)
        eps = torch.randn((n, self.means.shape[1]), generator=cpu, dtype=torch.float64)
        z = torch.empty_like(eps)
        for k in range(len(self.weights)):  # one matrix product per component: chols[which] would hold n d x d copies
            rows = which == k
            z[rows] = self.means[k] + eps[rows] @ self.chols[k].T
        return z.to(self.device, self.dtype)


FITTED = {"gaussian": GaussianSampler, "gmm": MixtureSampler}
NAMES = ("prior", *FITTED)


def make_samplers(names: list[str], model, components: int = 10, seed: int = 0,
                  labels: torch.Tensor | None = None, max_iter: int = 100) -> dict[str, Sampler]:
    """The requested samplers that `model` supports: "prior" where it declares one, the fitted ones where it
    decodes flat codes (unfitted: call fit)."""
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise ConfigError(f"callbacks.sample_quality.samplers has {unknown}; allowed: {list(NAMES)}")
    caps, out = model.capabilities, {}
    for name in names:
        if name == "prior" and caps.prior is not None:
            out[name] = PriorSampler(model, labels)
        elif name in FITTED and caps.embedding is not None and caps.decodes_codes:
            out[name] = MixtureSampler(components, seed, max_iter) if name == "gmm" else GaussianSampler()
    return out
