"""What every benchmark row uses: the clock, the sizes (full or --tiny), the report, configs composed from the real
conf/, aelab training through aelab.train.train() (its RunResult gives the trainer, module and parts), and the parts
the plain PyTorch loops train, built by aelab.build.build_parts."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.utils import instantiate

REPO = Path(__file__).resolve().parents[2]


class CLOCK:
    """What the in-process rows time: wall seconds, or (--cpu-time) this process's CPU seconds with one torch thread,
    which other processes sharing the CPU disturb far less than wall time."""

    name = "wall"
    now = staticmethod(time.perf_counter)

    @classmethod
    def use_cpu_time(cls) -> None:
        cls.name, cls.now = "process", staticmethod(time.process_time)
        torch.set_num_threads(1)


@dataclass
class Sizes:
    batches: int  # training batches per throughput measurement
    warmup: int  # batches before the clock starts (allocator and caches warm up)
    repeats: int
    data_batches: int
    malloc_repeats: int
    quality_max_epochs: int
    quality_limit_batches: float | int  # trainer.limit_train_batches for the quality run (1.0: whole epoch)
    sweep_batches: int
    tiny: bool = False


FULL = Sizes(batches=150, warmup=10, repeats=6, data_batches=200, malloc_repeats=3, quality_max_epochs=10,
             quality_limit_batches=1.0, sweep_batches=100)
TINY = Sizes(batches=8, warmup=2, repeats=1, data_batches=4, malloc_repeats=1, quality_max_epochs=1,
             quality_limit_batches=6, sweep_batches=3, tiny=True)


@dataclass
class Row:
    id: str
    benchmark: str
    result: str
    baseline: str = ""
    ratio: str = ""
    detail: str = ""


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)

    def add(self, *args, **kwargs) -> None:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        print(f"  {row.id:4s} {row.benchmark}: {row.result}" + (f" vs {row.baseline}" if row.baseline else "")
              + (f" ({row.ratio})" if row.ratio else ""), flush=True)


def median_spread(values: list[float]) -> tuple[float, str]:
    med = statistics.median(values)
    spread = f"n={len(values)}" + (f", {min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else "")
    return med, spread


def error_line(e: Exception) -> str:
    """An exception as one line for a row's detail: its type and the first line of its message."""
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}"


def rate(x: float) -> str:
    return f"{x:,.0f} img/s"


def find_data_dir() -> Path:
    """AELAB_DATA_DIR, else the checkout's data/, else ../shared/data beside the checkout (this project's layout)."""
    if os.environ.get("AELAB_DATA_DIR"):
        return Path(os.environ["AELAB_DATA_DIR"]).resolve()
    for candidate in (REPO / "data", REPO.parent / "shared" / "data"):
        if (candidate / "MNIST" / "raw").is_dir():
            return candidate.resolve()
    return REPO / "data"


def compose(overrides: list[str], output_dir: Path):
    """The config aelab-train would run with these overrides, its Hydra state set for a run in `output_dir`."""
    from aelab.config import compose as aelab_compose

    return aelab_compose(overrides, output_dir=output_dir)


def callback_target(cls) -> str:
    """The `_target_` Hydra instantiates `cls` from (a callback of this package, importable as experiments.*)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def find_callback(result, cls):
    """The instance of callback class `cls` the run's trainer used (a RunResult from aelab.train.train)."""
    return next(c for c in result.trainer.callbacks if isinstance(c, cls))


@contextlib.contextmanager
def quiet(log_path: Path):
    """Lightning's progress bar and banners go to a log file (they would flood the table); errors re-raise."""
    with open(log_path, "a") as log, contextlib.redirect_stderr(log), contextlib.redirect_stdout(log):
        yield


@contextlib.contextmanager
def restored_torch_flags():
    """Trainer(deterministic=...) flips process-wide torch flags; the plain loop must run with torch's defaults."""
    det, warn = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn)


def aelab_train(overrides: list[str], work: Path, name: str, extra_callbacks: dict | None = None,
                warmup: int = 5) -> tuple[dict, object]:
    """aelab.train.train() on the composed config plus a Throughput meter; returns (the meter's result, the
    RunResult: metrics, parts, module and trainer, whose callbacks the rows read)."""
    from omegaconf import open_dict

    from aelab.callbacks import Throughput
    from aelab.runs import RunDir
    from aelab.train import train

    out = work / name
    cfg = compose(overrides, out)
    with open_dict(cfg):
        cfg.callbacks = cfg.get("callbacks") or {}
        cfg.callbacks["throughput"] = {"_target_": callback_target(Throughput), "warmup_batches": warmup,
                                       "clock": CLOCK.name}
        for key, value in (extra_callbacks or {}).items():
            cfg.callbacks[key] = value
    with restored_torch_flags(), quiet(work / "lightning.log"):
        result = train(cfg, RunDir(out))
    return find_callback(result, Throughput).result(), result


def plain_parts(cfg, device: torch.device | str = "cpu"):
    """What the plain loops train: `cfg`'s training images (uint8, on `device`), corruption, model and optimizer,
    built by aelab's own build_parts from the run seed, as train() builds them (the same initial weights)."""
    from aelab.build import build_parts

    torch.manual_seed(cfg.seed)  # train() seeds with cfg.seed before build_parts
    parts = build_parts(cfg)
    model = parts.model.to(device)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    return parts.datamodule.splits["train"].images.to(device), parts.corruption, model, optimizer


def plain_step(model, optimizer, inputs: torch.Tensor, target: torch.Tensor) -> None:
    """The shortest correct training step for the lesson's autoencoder (BCE on logits)."""
    import torch.nn.functional as F

    loss = F.binary_cross_entropy_with_logits(model.decode(model.encode(inputs)), target)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def sync(device) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def train_overrides(sizes: Sizes, extra: list[str] = ()) -> list[str]:
    """One short epoch of the lesson's experiment at default settings (logger, checkpoints, image grids, metrics);
    validation limited to a few batches because it is outside the timed window anyway."""
    return ["experiment=ae_conv_mnist", "trainer.max_epochs=1", f"++trainer.limit_train_batches={sizes.batches}",
            "++trainer.limit_val_batches=2", "test=false", *extra]

