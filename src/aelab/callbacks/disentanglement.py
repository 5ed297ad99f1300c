"""Disentanglement on data with known factors of variation (data=dsprites): after testing, MIG, DCI, SAP and the
FactorVAE score of the model's code (aelab.disentanglement), and two figures: latent traversals (each code dimension
swept while the others stay at a test image's code) and the factor x dimension mutual-information heat map.

The data declares its factors (ImageDataModule.factor_names, factors(split), render(factors)); on data without them
the metrics and the heat map are skipped with one log line, the traversals still apply to any model that decodes
flat codes.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from aelab import disentanglement as dis
from aelab.callbacks.base import ModelCallback
from aelab.callbacks.figures import DPI, LABEL_PT, TICK_PT, TITLE_PT, FigureCallback, encode, grid_figure, test_batch
from aelab.callbacks.images import evaluating
from aelab.types import PositiveInt

log = logging.getLogger("aelab")
METRICS = ("test/mig", "test/dci_disentanglement", "test/dci_completeness", "test/dci_informativeness", "test/sap",
           "test/factorvae_score")


def has_factors(trainer) -> bool:
    dm = trainer.datamodule
    return dm is not None and bool(dm.factor_names)


@torch.no_grad()
def codes_of_images(module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The model's flat codes of clean uint8 images (corrupted from the "disentanglement" stream, as the model's
    input), as float64 numpy."""
    batch = module.corrupted_batch(images, labels, "disentanglement")
    return encode(module.model, batch.input, batch.label).double().cpu().numpy()


class DisentanglementMetrics(ModelCallback):
    """max_images: test images the codes are taken from (a limited test, trainer=debug, takes as many as it
    tested); factorvae_votes: training votes of the FactorVAE score (half as many evaluate it); seed: the metrics'
    classifiers, splits and votes."""

    metrics = METRICS

    def __init__(self, max_images: PositiveInt = 5000, factorvae_votes: PositiveInt = 500, seed: int = 0):
        self.max_images, self.factorvae_votes, self.seed = max_images, factorvae_votes, seed
        self._told: set[str] = set()

    def why_not(self, model) -> str | None:
        if model.capabilities.embedding is None:
            return f"{type(model).__name__} has no code (capabilities.embedding is None); no disentanglement metrics"
        return None

    def _limit(self, trainer) -> int:
        limit = trainer.limit_test_batches
        if isinstance(limit, int) or (isinstance(limit, float) and limit < 1.0):
            n = int(limit if isinstance(limit, int) else limit * trainer.num_test_batches[0])
            return max(64, min(self.max_images, n * trainer.datamodule.batch_size))
        return self.max_images

    def on_test_epoch_end(self, trainer, module) -> None:
        if trainer.sanity_checking or not self.applies(module.model):
            return
        if not has_factors(trainer):
            if "data" not in self._told:
                self._told.add("data")
                log.info("DisentanglementMetrics: the data has no ground-truth factors; no disentanglement metrics")
            return
        dm, n = trainer.datamodule, self._limit(trainer)
        images, labels = dm.all_of("test", n)
        factors = dm.factors("test", n).numpy()
        with evaluating(module):
            codes = codes_of_images(module, images, labels)

            def codes_of(f: np.ndarray) -> np.ndarray:
                rendered = dm.render(torch.from_numpy(f))
                return codes_of_images(module, rendered, torch.from_numpy(f[:, 0]))

            full = n >= self.max_images  # a limited test (smoke run) takes a token number of votes
            votes, size = (self.factorvae_votes, 64) if full else (10, 16)
            fvae = dis.factorvae_score(codes_of, dm.factor_sizes, self.seed, batch=size, train_votes=votes,
                                       eval_votes=max(5, votes // 2), scale_examples=min(2000, n))
        d = dis.dci(codes, factors, self.seed)
        scores = {"mig": dis.mig(codes, factors), "dci_disentanglement": d["disentanglement"],
                  "dci_completeness": d["completeness"], "dci_informativeness": d["informativeness"],
                  "sap": dis.sap(codes, factors, self.seed), "factorvae_score": fvae}
        for name, value in scores.items():
            module.log(f"test/{name}", float(value), on_step=False, on_epoch=True)


class LatentTraversal(FigureCallback):
    """Each of the first `max_dims` code dimensions swept over `steps` values (the prior's -limit..limit for a
    standard normal prior, else the test codes' 5 % to 95 % quantiles of that dimension), the others held at the
    first test image's code."""

    tag = "figures/latent_traversal"

    def __init__(self, steps: PositiveInt = 9, max_dims: PositiveInt = 10, limit: float = 2.0, n_images: int = 500,
                 every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        self.steps, self.max_dims, self.limit, self.n_images = steps, max_dims, float(limit), n_images

    def draw(self, trainer, module):
        model = module.model
        normal = model.capabilities.prior == "standard_normal"  # the prior's range: one image's code is enough
        batch = test_batch(trainer, module, 1 if normal else self.n_images)
        codes = encode(model, batch.input, batch.label)
        base = codes[0]
        dims = min(self.max_dims, len(base))
        if normal:
            values = torch.linspace(-self.limit, self.limit, self.steps, device=codes.device)[None].expand(dims, -1)
            what = f"from -{self.limit:g} to {self.limit:g}"
        else:
            q = torch.tensor([0.05, 0.95], device=codes.device, dtype=codes.dtype)
            lo, hi = torch.quantile(codes[:, :dims], q, dim=0)
            t = torch.linspace(0, 1, self.steps, device=codes.device)
            values = lo[:, None] + (hi - lo)[:, None] * t[None]
            what = "over each dimension's 5-95 % range of test codes"
        rows = []
        for d in range(dims):
            line = base.repeat(self.steps, 1)
            line[:, d] = values[d]
            rows.append(model.generate(line, batch.label[:1].repeat(self.steps)))
        return grid_figure(rows, [f"z{d}" for d in range(dims)], f"latent traversals {what}", tuple(rows[0].shape[1:]))


class FactorMutualInformation(FigureCallback):
    """The mutual information (nats) between each code dimension and each ground-truth factor, on up to `n_images`
    test images: a disentangled code has one bright cell per row and per column."""

    tag = "figures/factor_mutual_information"

    def __init__(self, n_images: PositiveInt = 5000, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        self.n_images = n_images

    def draw(self, trainer, module):
        if not has_factors(trainer):
            return None
        from matplotlib.figure import Figure

        dm = trainer.datamodule
        images, labels = dm.all_of("test", self.n_images)
        factors = dm.factors("test", self.n_images).numpy()
        codes = codes_of_images(module, images, labels)
        mi = dis.mutual_information(codes, factors)
        fig = Figure(figsize=(1.6 + 1.1 * len(dm.factor_names), 1.2 + 0.35 * len(mi)), dpi=DPI)
        ax = fig.add_subplot()
        shown = ax.imshow(mi, aspect="auto", cmap="viridis")
        ax.set_xticks(range(len(dm.factor_names)), dm.factor_names, fontsize=TICK_PT, rotation=20)
        ax.set_yticks(range(len(mi)), [f"z{d}" for d in range(len(mi))], fontsize=TICK_PT)
        ax.set_xlabel("factor", fontsize=LABEL_PT)
        ax.set_title(f"mutual information (nats), {len(codes)} test images", fontsize=TITLE_PT)
        fig.colorbar(shown, ax=ax)
        fig.tight_layout()
        return fig
