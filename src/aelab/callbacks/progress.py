"""The training progress bar: Lightning's TQDM bar, redrawn every few batches and reading train/loss only then."""

from __future__ import annotations

from lightning.pytorch.callbacks import ProgressBar, TQDMProgressBar

PROGRESS_BAR_REFRESH_RATE = 10  # batches between redraws: still several a second


class LossProgressBar(TQDMProgressBar):
    """Shows train/loss, read only when the bar redraws. Lightning turns every prog_bar value into a Python number
    after every batch, which on a GPU makes the CPU wait for each step to finish instead of queueing the next (a
    sync per step), so the module logs train/loss without prog_bar and the bar reads it here, every redraw."""

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = loss.item()
        return metrics

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """One redraw per update: Lightning's bar redraws for the new count and again for the new metrics (every
        line twice in a log that captures stdout); here the metrics are set without a redraw and the count draws both."""
        bar, n = self.train_progress_bar, batch_idx + 1
        if not self.is_enabled or not (n % self.refresh_rate == 0 or n == bar.total):
            return
        bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
        bar.n = n
        bar.refresh()


def with_progress_bar(callbacks: list, enabled: bool) -> list:
    """Lightning's default TQDM bar recomputes its metrics and redraws after every batch, a visible share of a small
    model's CPU step; a bar that refreshes every 10th batch looks the same. A progress bar the caller passed is kept."""
    callbacks = list(callbacks)
    if enabled and not any(isinstance(c, ProgressBar) for c in callbacks):
        callbacks.append(LossProgressBar(refresh_rate=PROGRESS_BAR_REFRESH_RATE))
    return callbacks
