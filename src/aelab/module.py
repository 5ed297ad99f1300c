"""One LightningModule for every model: clean uint8 batch -> (corrupt(clean), clean) -> the model's step -> logs.

The module knows nothing of model families: it reads `model.terms` and `model.capabilities`
(aelab.models.contract) and calls the model's public methods. Every training batch follows one contract: the
model's `training_loss` (eager, or the captured graph of aelab.capture), or `training_step` for a model that owns
its optimizers (manual optimisation); then `after_step` once the optimizer has stepped. Each term is logged as
`<stage>/<name>` and reduced over the epoch as its declaration says.

Randomness is tied to (seed, epoch, batch): the training corruption stream and torch's global RNG (VAE sampling)
are reseeded at every training step, so a run resumed from an epoch checkpoint replays exactly what an
uninterrupted run does. Validation and test use their own fixed streams and leave the training RNG untouched;
figures, image grids and the NLL ask `corrupted_batch` for their own named streams.
"""

from __future__ import annotations

import math

import lightning as L
import torch
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from aelab.adapters import attached_trainer, logs_this_step
from aelab.capture import capture_mode
from aelab.corruptions import Corruption, Identity
from aelab.data import to_float
from aelab.models import Autoencoder, Batch, LossTerms
from aelab.models.contract import check_terms
from aelab.optim import Optimisation, step_schedulers
from aelab.seeds import derive_seed, seeded_generator

def image_metrics() -> MetricCollection:
    # per-image PSNR averaged over images, as super-resolution papers report it
    return MetricCollection({"psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
                             "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)})


def pixel_errors(output: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """BCE and MSE per pixel (means over pixels and images) of the output image against the clean target: the same
    measures for every model, whatever its own loss (mean BCE per pixel for autoencoders, nats per image for VAEs).
    Written out rather than F.binary_cross_entropy, which refuses to run under autocast; log clamped at -100 as
    torch does, so an output of exactly 0 or 1 gives a finite value."""
    p, t = output.detach().float(), target.float()
    bce = -(t * p.log().clamp_min(-100) + (1 - t) * (1 - p).log().clamp_min(-100)).mean()
    return {"bce": bce, "mse": (p - t).square().mean()}


def metrics_stride(n_batches: float, every: int) -> int:
    """Training batches between two image-metric samples: `every`, shortened so that an epoch of `n_batches` gets
    at least 3 samples. Batches stride-1, 2*stride-1, ... are sampled: spread over the epoch, never batch 0 alone
    (measured before the epoch's first update). Each sample costs about half a small model's step."""
    if not math.isfinite(n_batches) or n_batches <= 0:
        return max(1, every)
    return max(1, min(every, int(n_batches) // 3))



class AutoencoderModule(L.LightningModule):
    def __init__(self, model: Autoencoder, corruption: Corruption | None = None,
                 optimisation: Optimisation | None = None, seed: int = 0, train_metrics_every: int = 10,
                 run_info: dict | None = None, capture_step: bool | str = False, channels_last: bool = False):
        super().__init__()
        self.model = model
        self.corruption = corruption or Identity()
        self.optimisation = optimisation or Optimisation()
        self.seed, self.train_metrics_every = seed, max(1, int(train_metrics_every))
        self.run_info = run_info or {}  # stored in every checkpoint: the config that rebuilds this model
        self.train_metrics, self.val_metrics, self.test_metrics = image_metrics(), image_metrics(), image_metrics()
        self._generators: dict[str, torch.Generator] = {}
        self._saved_rng: torch.Tensor | None = None
        self._saved_cuda_rng: torch.Tensor | None = None
        self.automatic_optimization = not model.capabilities.own_training_step
        self.capture_step, self._captured = capture_mode(capture_step), None  # aelab.capture: set up on the device
        self._reduce = {"loss": "mean", **{t.name: t.reduce for t in model.terms}}
        self._checked: set[str] = set()  # stages whose terms were checked against the declaration
        self._train_terms: list[tuple[tuple[str, ...], torch.Tensor, int]] = []  # the epoch's stacked terms
        self._metrics_stride = max(1, self.train_metrics_every)
        self._last_step: tuple[LossTerms, int] | None = None  # the batch's terms, for after_step
        # NHWC: oneDNN's CPU convolutions run fastest in it; conv weights are converted here and `_batch` converts
        # every batch, so no layer reorders its input on each call
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.model.to(memory_format=torch.channels_last)

    # --- randomness ---------------------------------------------------------------------------------------------
    def _generator(self, stage: str) -> torch.Generator:
        return self._generators[stage]

    def _reseed(self, stage: str, seed: int) -> None:
        gen = self._generators.get(stage)
        if gen is None or gen.device != self.device:
            gen = self._generators[stage] = torch.Generator(device=self.device)
        gen.manual_seed(seed)

    def _seed_train_step(self, batch_idx: int) -> None:
        """Every training step's randomness (corruption, VAE sampling) is a function of (seed, epoch, batch): a
        resumed run replays it exactly, whatever else (callbacks, lazy set-up) drew from torch's RNG meanwhile."""
        s = derive_seed(self.seed, "train", self.current_epoch, batch_idx)
        self._reseed("train", s)
        # Only the generators this run draws from: torch.manual_seed would also queue lazy seeds for every backend
        # not in use (CUDA on a CPU run, XPU and MTIA everywhere), each with a formatted stack trace, a visible share
        # of a small model's step.
        torch.default_generator.manual_seed(s)
        if self.device.type != "cpu":
            getattr(torch, self.device.type).manual_seed(s)  # torch.cuda.manual_seed: this device, at once

    def _eval_start(self, stage: str) -> None:
        self._saved_rng = torch.get_rng_state()
        self._saved_cuda_rng = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
        self._reseed(stage, derive_seed(self.seed, stage))
        torch.manual_seed(derive_seed(self.seed, stage))

    def _eval_end(self) -> None:
        if self._saved_rng is not None:
            torch.set_rng_state(self._saved_rng)
            if self._saved_cuda_rng is not None:
                torch.cuda.set_rng_state(self._saved_cuda_rng)
            self._saved_rng = None

    def on_train_start(self) -> None:
        from aelab.capture import training_loss

        self._captured = training_loss(self, self.capture_step)

    def on_validation_epoch_start(self) -> None:
        self._eval_start("val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end()

    def on_test_epoch_start(self) -> None:
        self._eval_start("test")

    def on_test_epoch_end(self) -> None:
        self._eval_end()

    # --- steps --------------------------------------------------------------------------------------------------
    def _batch(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
               factors: torch.Tensor | None = None) -> Batch:
        clean = to_float(images.to(self.device))
        if self.channels_last:
            clean = clean.contiguous(memory_format=torch.channels_last)
        return Batch(input=self.corruption(clean, generator), target=clean, label=labels.to(self.device),
                     factors=factors.to(self.device) if factors is not None else None)

    def make_batch(self, raw: tuple[torch.Tensor, ...], stage: str) -> Batch:
        """A step's clean uint8 batch (images, labels[, factors]) -> Batch(corrupted input, clean target, label,
        factors), from the stage's stream."""
        if stage not in self._generators:
            self._reseed(stage, derive_seed(self.seed, stage))
        images, labels, *factors = raw
        return self._batch(images, labels, self._generator(stage), factors[0] if factors else None)

    def corrupted_batch(self, images: torch.Tensor, labels: torch.Tensor, stream: str) -> Batch:
        """Clean uint8 images corrupted from their own seeded stream (e.g. "figures", "grid/val", "nll"): the same
        input every time it is asked, whatever ran before, without touching any other stream."""
        return self._batch(images, labels, seeded_generator(self.device, self.seed, stream))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _train_log_due(self, batch_idx: int) -> bool:
        """Whether Lightning writes this training step's values to the logger (every trainer.log_every_n_steps).
        Each self.log is a visible share of a small model's CPU step in Python, so training terms are only logged
        on those steps, and on each epoch's first batch for the progress bar."""
        trainer = attached_trainer(self)
        if trainer is None or batch_idx == 0 or trainer.fast_dev_run:
            return True
        return logs_this_step(trainer)

    def _step(self, raw, batch_idx: int, stage: str) -> dict:
        """Returns {"loss"} for training, {"loss", "batch", "terms"} for validation and test: callbacks read the
        corrupted batch and the output from `on_{val,test}_batch_end(outputs=...)` (baselines) without recomputing
        them."""
        if stage == "train":
            self._seed_train_step(batch_idx)
        batch, step = self.make_batch(raw, stage), self.global_step
        if stage != "train":
            terms = self.model.loss(batch, step=step)
        elif self._captured is not None:
            terms = self._captured(batch, step)
        elif not self.automatic_optimization:
            terms = self.model.training_step(batch, step, self)
        else:
            terms = self.model.training_loss(batch, step, self.current_epoch)
        if stage not in self._checked:
            check_terms(type(self.model).__name__, self.model.terms, terms, stage)
            self._checked.add(stage)
        n = len(batch.target)
        if stage == "train":
            self._last_step = (terms, step)
            self._log_train(terms, batch, batch_idx, n)
            return {"loss": terms.loss}  # nothing reads more of a training step; Lightning detaches what is returned
        # sync_dist: under DDP each rank sees a shard of val/test, the epoch value must average all of them
        for name, value in terms.logged().items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=n, prog_bar=name == "loss",
                     sync_dist=True, reduce_fx=self._reduce[name])
        for name, value in pixel_errors(terms.output, batch.target).items():
            self.log(f"{stage}/{name}", value, on_step=False, on_epoch=True, batch_size=n, sync_dist=True)
        self._log_image_metrics(stage, terms, batch, n)
        return {"loss": terms.loss, "batch": batch, "terms": terms}

    # --- training logs: epoch means of every step (summed on the device at epoch end), per-step values on logging
    # steps, image metrics on sampled steps -------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        self._train_terms = []
        trainer = attached_trainer(self)
        n = trainer.num_training_batches if trainer is not None else float("inf")
        self._metrics_stride = metrics_stride(n, self.train_metrics_every)

    def _log_train(self, terms, batch: Batch, batch_idx: int, n: int) -> None:
        """Every step: the logged terms stacked on their device for the epoch means (one kernel, no read); on the
        steps Lightning writes (trainer.log_every_n_steps): train/<term>_step, and train/loss for the progress bar
        (aelab.callbacks.progress.LossProgressBar; not prog_bar, which Lightning reads after every batch: a GPU
        sync). No self.log runs on the other steps (see _train_log_due). On sampled steps: PSNR/SSIM and per-pixel BCE/MSE, epoch means over the sampled batches."""
        values = terms.logged()
        with torch.no_grad():
            stacked = torch.stack([v.detach().float() for v in values.values()])
        self._train_terms.append((tuple(values), stacked, n))
        if self._train_log_due(batch_idx):
            for name, value in values.items():
                self.log(f"train/{name}_step", value.detach(), on_step=True, on_epoch=False, batch_size=n)
            self.log("train/loss", terms.loss.detach(), on_step=True, on_epoch=False, batch_size=n, logger=False)
        if (batch_idx + 1) % self._metrics_stride == 0:
            for name, value in pixel_errors(terms.output, batch.target).items():
                self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=n)
            self._log_image_metrics("train", terms, batch, n)

    def _log_train_epoch_means(self) -> None:
        """train/<term>: the epoch's value of every logged term as its declaration reduces it (the batch-size-
        weighted mean, or the sum, max or min over batches), one point per epoch whatever log_every_n_steps is (one
        transfer per epoch, at its end)."""
        entries, self._train_terms = self._train_terms, []
        values: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}  # name -> [(per-batch values, sizes)]
        for names in dict.fromkeys(e[0] for e in entries):
            group = [(s, k) for nm, s, k in entries if nm == names]
            stacked = torch.stack([s for s, _ in group])
            sizes = torch.tensor([k for _, k in group], dtype=torch.float32).to(stacked.device)
            for i, name in enumerate(names):
                values.setdefault(name, []).append((stacked[:, i], sizes))
        for name, parts in values.items():
            v, k = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
            reduce = self._reduce.get(name, "mean")
            epoch = {"mean": lambda: (v * k).sum() / k.sum(), "sum": v.sum, "max": v.max, "min": v.min}[reduce]()
            self.log(f"train/{name}", epoch, on_step=False, on_epoch=True, batch_size=1, sync_dist=True,
                     reduce_fx=reduce)

    def _log_image_metrics(self, stage: str, terms, batch: Batch, n: int) -> None:
        metrics = getattr(self, f"{stage}_metrics")
        metrics.update(terms.output.detach().float().clamp(0, 1), batch.target)
        self.log_dict({f"{stage}/{k}": m for k, m in metrics.items()}, on_step=False, on_epoch=True, batch_size=n)

    def training_step(self, raw, batch_idx):
        return self._step(raw, batch_idx, "train")

    def validation_step(self, raw, batch_idx):
        return self._step(raw, batch_idx, "val")

    def test_step(self, raw, batch_idx):
        return self._step(raw, batch_idx, "test")

    def predict_step(self, raw, batch_idx):
        batch = self.make_batch(raw, "test")
        return self.model.reconstruct(batch)

    # --- optimisation and checkpoints ---------------------------------------------------------------------------
    def configure_optimizers(self):
        groups = self.model.parameter_groups()
        return self.optimisation.configure(groups, lambda: self.trainer.estimated_stepping_batches)

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        """After the optimizer step: the model's state updates, and (manual optimisation) per-step schedulers."""
        if self._last_step is not None:
            terms, step = self._last_step
            self._last_step = None
            with torch.no_grad():
                self.model.after_step(terms, step)
        if not self.automatic_optimization:
            step_schedulers(self, "step")

    def on_train_epoch_end(self) -> None:
        self._log_train_epoch_means()
        if not self.automatic_optimization:
            step_schedulers(self, "epoch")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aelab"] = self.run_info
