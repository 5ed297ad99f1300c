"""One LightningModule for every model: clean uint8 batch -> (corrupt(clean), clean) -> model.loss -> logs.

Randomness is tied to (seed, epoch, batch): the training corruption stream and torch's global RNG (VAE sampling)
are reseeded at every training step, so a run resumed from an epoch checkpoint replays exactly what an
uninterrupted run does. Validation and test use their own fixed streams and leave the training RNG untouched.
"""

from __future__ import annotations

from typing import Any, Callable

import lightning as L
import torch
from torchmetrics import MetricCollection
from torchmetrics.image import PeakSignalNoiseRatio, StructuralSimilarityIndexMeasure

from aelab.corruptions import Corruption, Identity
from aelab.data import to_float
from aelab.models import Autoencoder, Batch

STAGES = ("train", "val", "test")
EVAL_SEED_OFFSET = {"val": 1_000_003, "test": 2_000_003}


def image_metrics() -> MetricCollection:
    # per-image PSNR averaged over images, as super-resolution papers report it
    return MetricCollection({"psnr": PeakSignalNoiseRatio(data_range=1.0, dim=(1, 2, 3)),
                             "ssim": StructuralSimilarityIndexMeasure(data_range=1.0)})


def step_seed(seed: int, epoch: int, batch_idx: int) -> int:
    return (seed * 1_000_033 + epoch * 7_919 + batch_idx * 104_729) % (2**63 - 1)


class AutoencoderModule(L.LightningModule):
    def __init__(self, model: Autoencoder, corruption: Corruption | None = None,
                 optimizer: Callable[..., torch.optim.Optimizer] | None = None,
                 scheduler: Callable[..., Any] | None = None, seed: int = 0, train_metrics_every: int = 10,
                 run_info: dict | None = None):
        super().__init__()
        self.model = model
        self.corruption = corruption or Identity()
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.seed, self.train_metrics_every = seed, max(1, int(train_metrics_every))
        self.run_info = run_info or {}  # stored in every checkpoint: the config that rebuilds this model
        self.train_metrics, self.val_metrics, self.test_metrics = image_metrics(), image_metrics(), image_metrics()
        self._generators: dict[str, torch.Generator] = {}
        self._saved_rng: torch.Tensor | None = None
        # adversarial models (AAE) step a discriminator with its own optimizer: Lightning's manual optimisation
        self.adversarial = bool(getattr(model, "adversarial", False))
        self.automatic_optimization = not self.adversarial

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
        s = step_seed(self.seed, self.current_epoch, batch_idx)
        self._reseed("train", s)
        # Only the generators this run draws from: torch.manual_seed would also queue lazy seeds for every backend
        # not in use (CUDA on a CPU run, XPU and MTIA everywhere), each with a formatted stack trace: ~5% of a small
        # model's CPU step, 2.7 ms of a 16 ms step on an H100 (cProfile).
        torch.default_generator.manual_seed(s)
        if self.device.type != "cpu":
            getattr(torch, self.device.type).manual_seed(s)  # torch.cuda.manual_seed: this device, at once

    def _eval_start(self, stage: str) -> None:
        self._saved_rng = torch.get_rng_state()
        cuda_state = torch.cuda.get_rng_state() if self.device.type == "cuda" else None
        self._saved_cuda_rng = cuda_state
        self._reseed(stage, self.seed + EVAL_SEED_OFFSET[stage])
        torch.manual_seed(self.seed + EVAL_SEED_OFFSET[stage])

    def _eval_end(self) -> None:
        if self._saved_rng is not None:
            torch.set_rng_state(self._saved_rng)
            if self._saved_cuda_rng is not None:
                torch.cuda.set_rng_state(self._saved_cuda_rng)
            self._saved_rng = None

    def on_validation_epoch_start(self) -> None:
        self._eval_start("val")

    def on_validation_epoch_end(self) -> None:
        self._eval_end()

    def on_test_epoch_start(self) -> None:
        self._eval_start("test")

    def on_test_epoch_end(self) -> None:
        self._eval_end()

    # --- steps --------------------------------------------------------------------------------------------------
    def make_batch(self, raw: tuple[torch.Tensor, torch.Tensor], stage: str) -> Batch:
        """Clean uint8 images on the device -> Batch(corrupted input, clean target, label)."""
        images, labels = raw
        clean = to_float(images)
        if stage not in self._generators:
            self._reseed(stage, self.seed + EVAL_SEED_OFFSET.get(stage, 0))
        return Batch(input=self.corruption(clean, self._generator(stage)), target=clean, label=labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _train_log_due(self, batch_idx: int) -> bool:
        """Whether Lightning writes this training step's values to the logger (every trainer.log_every_n_steps).
        Each self.log costs about a millisecond of Python, 5-10% of a small model's CPU step, so training terms
        are only logged on those steps, and on each epoch's first batch for the progress bar."""
        trainer = self._trainer
        if trainer is None or batch_idx == 0 or trainer.fast_dev_run:
            return True
        # Lightning's own test (a private attribute: if it ever disappears, log every step as before)
        return bool(getattr(getattr(trainer, "_logger_connector", None), "should_update_logs", True))

    def _step(self, raw, batch_idx: int, stage: str) -> dict:
        """Returns {"loss"} for training, {"loss", "batch", "terms"} for validation and test: callbacks read the
        corrupted batch and the output from `on_{val,test}_batch_end(outputs=...)` (baselines) without recomputing
        them."""
        if stage == "train":
            self._seed_train_step(batch_idx)
        batch = self.make_batch(raw, stage)
        if stage == "train" and self.adversarial:
            terms = self._adversarial_update(batch)
        else:
            terms = self.model.loss(batch, step=self.global_step)
        n = len(batch.target)
        on_step = stage == "train"
        logged = terms.logged() if not on_step or self._train_log_due(batch_idx) else {}
        for name, value in logged.items():
            # sync_dist: under DDP each rank sees a shard of val/test, the epoch value must average all of them.
            # prog_bar only for val/test: Lightning reads prog_bar values after every training batch (a GPU sync);
            # aelab's progress bar shows train/loss itself (aelab.perf.LossProgressBar)
            self.log(f"{stage}/{name}", value.detach() if on_step else value, on_step=on_step,
                     on_epoch=not on_step, batch_size=n, prog_bar=name == "loss" and not on_step,
                     sync_dist=not on_step)
        # image metrics cost about as much as a small model's step: on training batches, sample every n-th
        if stage != "train" or batch_idx % self.train_metrics_every == 0:
            metrics = getattr(self, f"{stage}_metrics")
            metrics.update(terms.output.detach().float().clamp(0, 1), batch.target)
            self.log_dict({f"{stage}/{k}": m for k, m in metrics.items()}, on_step=False, on_epoch=True,
                          batch_size=n)
        if stage == "train":  # nothing reads more of a training step, and Lightning detaches every tensor returned
            return {"loss": terms.loss}
        return {"loss": terms.loss, "batch": batch, "terms": terms}

    def _adversarial_update(self, batch: Batch):
        """Discriminator step, then autoencoder (generator) step; returns the autoencoder's terms with the
        discriminator's d_loss / d_acc added, so `_step` logs everything as the automatic path does."""
        opt_ae, opt_d = self.optimizers()
        d_terms = self.model.discriminator_loss(batch)
        opt_d.zero_grad()
        self.manual_backward(d_terms.loss)
        # the strategy's step (precision plugin included) but not LightningOptimizer.step, which would count it in
        # global_step: that then counts batches as with one optimizer (max_steps, warm-ups, checkpoint intervals)
        self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None)
        with self.toggled_optimizer(opt_ae):  # no gradients into the discriminator from the generator loss
            terms = self.model.loss(batch, step=self.global_step)
            opt_ae.zero_grad()
            self.manual_backward(terms.loss)
            opt_ae.step()
        terms.extras.update(d_terms.logged())
        return terms

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
        factory = self.optimizer_factory or torch.optim.Adam
        if self.adversarial:
            optimizers = [factory(params=self.model.autoencoder_parameters()),
                          factory(params=self.model.discriminator_parameters())]
            if self.scheduler_factory is None:
                return optimizers
            return optimizers, [self.scheduler_factory(optimizer=o) for o in optimizers]  # stepped below
        optimizer = factory(params=self.model.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer=optimizer), "monitor": "val/loss"}}

    def on_train_epoch_end(self) -> None:
        """Manual optimisation leaves the schedulers to us: step them once per epoch (after validation ran)."""
        if not self.adversarial:
            return
        schedulers = self.lr_schedulers()
        for scheduler in schedulers if isinstance(schedulers, list) else [schedulers] if schedulers else []:
            if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                if (value := self.trainer.callback_metrics.get("val/loss")) is not None:
                    scheduler.step(value)
            else:
                scheduler.step()

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["aelab"] = self.run_info
