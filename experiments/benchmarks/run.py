#!/usr/bin/env python
"""aelab benchmarks: what the framework costs, how fast its data path is, how quickly the lesson's
model reaches the lesson's quality, and how sweeps scale.

    python experiments/benchmarks/run.py            # full run (minutes), writes experiments/benchmarks/RESULTS.md
    python experiments/benchmarks/run.py --tiny     # a few batches per row: checks that every row still runs
    python experiments/benchmarks/run.py --only overhead,data --out /tmp/bench.md

Rows (ids as in RESULTS.md):
  a  framework overhead  aelab training (real configs composed with Hydra, default logging and callbacks) vs a plain
                         PyTorch loop with the same model, data tensors, batch size and optimizer, alternated in
                         this process; images/s over the same window of training batches.
  m  malloc tuning       aelab training in fresh subprocesses: glibc defaults vs aelab.perf.tune_malloc (what
                         aelab-train does) vs the equivalent MALLOC_* environment variables.
  b  data path           in-memory uint8 batches (aelab) vs torchvision's MNIST + ToTensor per-sample DataLoader,
                         data only and end to end (plain training step), clean and with the lesson's Gaussian noise.
  c  quality per time    experiment=ae_conv_mnist until the test BCE reaches the lesson's 0.0953 (lesson: 25 epochs).
  d  GPU                 seconds per MNIST training epoch of ae_conv_mnist with the data kept on the device
                         (data.on_device), per option: fp32 / batches copied from pinned memory / a per-step loss
                         read / deterministic off / bf16-mixed / torch.compile / channels_last / batch 512 / CUDA
                         graphs (model.compile=reduce-overhead), against the plain loop with its data on the device
                         too; target <= 1 s. When CUDA is present:
                         python experiments/benchmarks/run.py --only gpu --out experiments/benchmarks/RESULTS-gpu.md
  e  sweep throughput    a 4-job grid through aelab-train -m: Hydra's basic (sequential) launcher vs joblib, 2 jobs.

Every number is the median of repeats; each row reports its spread. Timings on a shared machine are noisy: the load
average at start and end is recorded with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import gzip
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from hydra.utils import instantiate

from aelab.build import build_corruption
from aelab.data import to_float
from aelab.models import Batch

REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "experiments" / "benchmarks" / "RESULTS.md"
LESSON_TEST_BCE = 0.0953  # the lesson's conv AE on MNIST after 25 epochs
LESSON_EPOCHS = 25
SECTIONS = ("overhead", "malloc", "data", "quality", "gpu", "sweep")


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


# --- helpers -------------------------------------------------------------------------------------------------------
def median_spread(values: list[float]) -> tuple[float, str]:
    med = statistics.median(values)
    spread = f"n={len(values)}" + (f", {min(values):,.0f}-{max(values):,.0f}" if len(values) > 1 else "")
    return med, spread


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
    """The config aelab-train would run with these overrides (Hydra's compose API, the real conf/)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import open_dict

    from aelab.config import CONFIG_DIR

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num, cfg.hydra.job.id = 0, "bench"
    HydraConfig.instance().set_config(cfg)  # ${hydra:runtime.output_dir} and train()'s hparams read it
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def callback_target(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _Instances:
    """Callbacks that Hydra instantiates inside train() register here so the benchmark can read them."""

    items: list = []


class QualityProbe(L.Callback):
    """Test BCE after every validation epoch; stops training once it reaches `target`. Its own evaluation time is
    subtracted from the elapsed time it records."""

    def __init__(self, target: float, limit: int | None = None):
        super().__init__()
        self.target, self.limit, self.curve, self.probe_s, self.t0 = target, limit, [], 0.0, None
        _Instances.items.append(self)

    def on_train_start(self, trainer, module):
        self.t0 = CLOCK.now()

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        start = CLOCK.now()
        images, _ = trainer.datamodule.all_of("test", self.limit)
        total, count = 0.0, 0
        was_training, generator = module.training, torch.Generator(device=module.device).manual_seed(0)
        module.eval()
        with torch.no_grad():
            for chunk in images.split(1000):
                clean = to_float(chunk.to(module.device))
                terms = module.model.loss(Batch(input=module.corruption(clean, generator), target=clean))
                total, count = total + float(terms.recon_loss) * len(chunk), count + len(chunk)
        module.train(was_training)
        self.probe_s += CLOCK.now() - start
        bce = total / count
        self.curve.append({"epoch": trainer.current_epoch + 1, "test_bce": bce,
                           "train_s": CLOCK.now() - self.t0 - self.probe_s})
        if bce <= self.target:
            trainer.should_stop = True


class ChannelsLast(L.Callback):
    """GPU row: model weights in channels_last memory format (faster convolutions with tensor cores)."""

    def on_fit_start(self, trainer, module):
        module.to(memory_format=torch.channels_last)


class ReadLossEveryStep(L.Callback):
    """GPU row: read the loss on the CPU after every step, as a per-step NaN check would (the CPU then waits for the
    GPU at every step instead of queueing the next one); aelab's FiniteLoss reads it every 50 steps on a GPU."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        float(outputs["loss"])


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
                warmup: int = 5) -> tuple[dict, dict]:
    """aelab.train.train() on the composed config plus a Throughput meter; returns (throughput, metrics)."""
    from omegaconf import open_dict

    from aelab.runs import RunDir
    from aelab.train import train

    out = work / name
    cfg = compose(overrides, out)
    meter_file = out / "throughput.json"
    with open_dict(cfg):
        cfg.callbacks = cfg.get("callbacks") or {}
        cfg.callbacks["throughput"] = {"_target_": "aelab.perf.Throughput", "warmup_batches": warmup,
                                       "out": str(meter_file), "clock": CLOCK.name}
        for key, value in (extra_callbacks or {}).items():
            cfg.callbacks[key] = value
    with restored_torch_flags(), quiet(work / "lightning.log"):
        metrics = train(cfg, RunDir(out))
    return json.loads(meter_file.read_text()), metrics


def plain_parts(cfg, device: torch.device | str = "cpu"):
    """What the plain loops train: `cfg`'s training images (uint8, on `device`), corruption, model and optimizer."""
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    corruption = build_corruption(cfg.get("corruption"))
    shape = dm.image_shape
    model = instantiate(cfg.model, input_shape=corruption.output_shape(shape), output_shape=shape,
                        num_classes=dm.num_classes).to(device)
    optimizer = instantiate(cfg.optimizer)(params=model.parameters())
    return dm.splits["train"].images.to(device), corruption, model, optimizer


def plain_loop(cfg, n_batches: int, warmup: int) -> float:
    """The same model/data/batch size/optimizer as `cfg`, trained on the CPU by the shortest correct PyTorch loop."""
    images, corruption, model, optimizer = plain_parts(cfg)
    batch_size = int(cfg.data.batch_size)
    order = torch.randperm(len(images))
    n_batches = min(n_batches, len(order) // batch_size)
    start, seen = None, 0
    for i in range(n_batches):
        x = images[order[i * batch_size:(i + 1) * batch_size]].float().div_(255)
        loss = F.binary_cross_entropy_with_logits(model.decode(model.encode(corruption(x))), x)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i == warmup - 1:
            start = CLOCK.now()
        elif i >= warmup:
            seen += len(x)
    return seen / (CLOCK.now() - start)


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def train_overrides(sizes: Sizes, extra: list[str] = ()) -> list[str]:
    """One short epoch of the lesson's experiment at default settings (logger, checkpoints, image grids, metrics);
    validation limited to a few batches because it is outside the timed window anyway."""
    return ["experiment=ae_conv_mnist", "trainer.max_epochs=1", f"++trainer.limit_train_batches={sizes.batches}",
            "++trainer.limit_val_batches=2", "test=false", *extra]


# --- rows ----------------------------------------------------------------------------------------------------------
def bench_overhead(report: Report, sizes: Sizes, work: Path) -> None:
    print("a: framework overhead", flush=True)
    overrides = train_overrides(sizes)
    aelab, plain = [], []

    def run_aelab(r: int) -> None:
        gc.collect()  # garbage left by the previous run is collected now, not inside the next timed window
        aelab.append(aelab_train(overrides, work, f"overhead-{r}", warmup=sizes.warmup)[0]["images_per_s"])

    def run_plain(r: int) -> None:
        gc.collect()
        plain.append(plain_loop(compose(overrides, work / "plain"), sizes.batches, sizes.warmup))

    for r in range(sizes.repeats):
        # pairs in alternating order (aelab first, then plain first): whichever runs second in a pair inherits the
        # first one's caches and heap, and that favoured one side by a few percent when the order was fixed
        for run in ((run_aelab, run_plain) if r % 2 == 0 else (run_plain, run_aelab)):
            run(r)
    a, a_spread = median_spread(aelab)
    p, p_spread = median_spread(plain)
    # each aelab run is compared with the plain run of its pair: load that drifts between repeats cancels out
    pairs = [x / y for x, y in zip(aelab, plain)]
    paired = statistics.median(pairs)
    report.raw["overhead"] = {"aelab": aelab, "plain": plain, "paired_ratio": paired}
    report.add("a", "framework overhead: training throughput (MNIST, ae_conv, batch 128)", f"aelab {rate(a)}",
               f"plain loop {rate(p)}", f"{paired:.2f}x",
               f"ratio = median of paired repeats (each {min(pairs):.2f}-{max(pairs):.2f}: wall-clock noise on a "
               f"small machine; --cpu-time is steadier); {sizes.batches - sizes.warmup} timed batches after "
               f"{sizes.warmup} warm-up; aelab {a_spread}; plain {p_spread}; target >= 0.95")


def bench_malloc(report: Report, sizes: Sizes, work: Path) -> None:
    print("m: malloc tuning (fresh subprocesses)", flush=True)
    from aelab import perf

    variants = {
        "glibc defaults": {perf.OPT_OUT_ENV: "1"},
        "tune_malloc() (aelab-train default)": {},
        "MALLOC_* environment variables": {"MALLOC_MMAP_THRESHOLD_": str(perf.MMAP_THRESHOLD),
                                           "MALLOC_TRIM_THRESHOLD_": str(perf.TRIM_THRESHOLD)},
    }
    results: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(sizes.malloc_repeats):
        for name, env_extra in variants.items():
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != perf.OPT_OUT_ENV}
            env.update(env_extra)
            cmd = [sys.executable, str(Path(__file__).resolve()), "--child-malloc", str(work / f"malloc-{r}"),
                   "--batches", str(sizes.batches), "--warmup", str(sizes.warmup), *(["--tiny"] if sizes.tiny else []),
                   *(["--cpu-time"] if CLOCK.name == "process" else [])]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"malloc child failed:\n{proc.stderr[-3000:]}")
            results[name].append(json.loads(proc.stdout.strip().splitlines()[-1])["images_per_s"])
    report.raw["malloc"] = results
    base, _ = median_spread(results["glibc defaults"])
    tuned, t_spread = median_spread(results["tune_malloc() (aelab-train default)"])
    env_rate, e_spread = median_spread(results["MALLOC_* environment variables"])
    report.add("m", "malloc tuning: aelab training, fresh process each", f"tune_malloc {rate(tuned)}",
               f"glibc defaults {rate(base)}", f"{tuned / base:.2f}x",
               f"MALLOC_* env vars {rate(env_rate)} ({env_rate / base:.2f}x); tuned {t_spread}, env {e_spread}")


def child_malloc(work: Path, batches: int, warmup: int) -> None:
    """Runs in a fresh process: what aelab-train does at start-up, then a short aelab training."""
    from aelab.perf import tune_malloc

    applied = tune_malloc()
    sizes = Sizes(batches=batches, warmup=warmup, repeats=1, data_batches=0, malloc_repeats=1,
                  quality_max_epochs=1, quality_limit_batches=1, sweep_batches=1)
    work.mkdir(parents=True, exist_ok=True)
    result, _ = aelab_train(train_overrides(sizes), work, "child", warmup=warmup)
    print(json.dumps({**result, "applied": applied}))


def extract_mnist(data_dir: Path, scratch: Path) -> Path:
    """torchvision.datasets.MNIST reads extracted IDX files: decompress a scratch copy (never into data_dir)."""
    raw = scratch / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for gz in (data_dir / "MNIST" / "raw").glob("*-ubyte.gz"):
        target = raw / gz.name[:-3]
        if not target.exists():
            with gzip.open(gz, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return scratch


def bench_data(report: Report, sizes: Sizes, work: Path, data_dir: Path) -> None:
    print("b: data path", flush=True)
    import torchvision
    from torch.utils.data import DataLoader, Dataset
    from torchvision.transforms import ToTensor

    cfg = compose(["experiment=ae_conv_mnist", "corruption=gaussian_noise"], work / "data")
    noise = build_corruption(cfg.corruption)  # the lesson's mean 0.5 / std 0.5, clipped
    batch_size = int(cfg.data.batch_size)
    dm = instantiate(cfg.data)
    dm.setup("fit")
    root = extract_mnist(data_dir, work / "torchvision-mnist")
    tv_clean = torchvision.datasets.MNIST(str(root), train=True, transform=ToTensor(), download=False)

    class NoisyPairs(Dataset):
        """The usual denoising Dataset: (noisy, clean, label) per sample, noise drawn in __getitem__."""

        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return (x + noise.mean + noise.std * torch.randn_like(x)).clamp(0, 1), x, y

    def aelab_batches(noisy: bool):
        generator = torch.Generator().manual_seed(0)
        for images, _ in dm.train_dataloader():
            clean = to_float(images)
            yield (noise(clean, generator) if noisy else clean), clean

    def torchvision_batches(noisy: bool):
        loader = DataLoader(NoisyPairs(tv_clean) if noisy else tv_clean, batch_size=batch_size, shuffle=True,
                            num_workers=0)
        for item in loader:
            yield (item[0], item[1]) if noisy else (item[0], item[0])

    def measure(batches, train: bool) -> float:
        model = optimizer = None
        if train:
            torch.manual_seed(0)
            shape = dm.image_shape
            model = instantiate(cfg.model, input_shape=shape, output_shape=shape, num_classes=dm.num_classes)
            optimizer = instantiate(cfg.optimizer)(params=model.parameters())
        start, seen = None, 0
        for i, (inputs, target) in enumerate(batches):
            if train:
                loss = F.binary_cross_entropy_with_logits(model.decode(model.encode(inputs)), target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if i == 0:
                start = CLOCK.now()  # the first batch pays one-off costs (loader start, allocations)
            else:
                seen += len(target)
            if i >= sizes.data_batches:
                break
        return seen / (CLOCK.now() - start)

    results = {}
    for train in (False, True):
        for noisy in (False, True):
            key = f"{'end to end' if train else 'data only'}, {'gaussian noise' if noisy else 'clean'}"
            mem, tv = [], []
            for _ in range(max(1, sizes.repeats - 2)):
                mem.append(measure(aelab_batches(noisy), train))
                tv.append(measure(torchvision_batches(noisy), train))
            results[key] = {"in_memory": mem, "torchvision": tv}
            m, m_spread = median_spread(mem)
            t, t_spread = median_spread(tv)
            row_id = f"b{len(results)}"
            report.add(row_id, f"data path, {key}", f"in-memory {rate(m)}", f"torchvision per-sample {rate(t)}",
                       f"{m / t:.1f}x", f"{sizes.data_batches} batches of {batch_size}; in-memory {m_spread}; "
                       f"torchvision {t_spread}" + ("; plain training step on ae_conv" if train else ""))
    report.raw["data"] = results


def bench_quality(report: Report, sizes: Sizes, work: Path) -> None:
    print("c: quality per time (experiment=ae_conv_mnist to the lesson's test BCE)", flush=True)
    overrides = ["experiment=ae_conv_mnist", f"trainer.max_epochs={sizes.quality_max_epochs}",
                 f"++trainer.limit_train_batches={sizes.quality_limit_batches}", "test=false",
                 "trainer.enable_progress_bar=false"]
    if sizes.quality_limit_batches != 1.0:
        overrides.append("++trainer.limit_val_batches=2")
    _Instances.items.clear()
    probe_cfg = {"_target_": callback_target(QualityProbe), "target": LESSON_TEST_BCE,
                 "limit": None if sizes.quality_limit_batches == 1.0 else 1000}  # tiny: part of the test set
    start = time.perf_counter()
    aelab_train(overrides, work, "quality", extra_callbacks={"quality_probe": probe_cfg})
    total = time.perf_counter() - start
    probe = _Instances.items[-1]
    curve = probe.curve
    report.raw["quality"] = {"curve": curve, "overrides": overrides, "total_s": total}
    reached = next((c for c in curve if c["test_bce"] <= LESSON_TEST_BCE), None)
    text = ", ".join(f"{c['epoch']}: {c['test_bce']:.4f}" for c in curve)
    if reached:
        result = f"test BCE {reached['test_bce']:.4f} after {reached['epoch']} epochs, {reached['train_s']:.0f} s"
    else:
        best = min(c["test_bce"] for c in curve) if curve else float("nan")
        result = f"not reached in {len(curve)} epochs (best {best:.4f}, {curve[-1]['train_s']:.0f} s)" if curve \
            else "no epoch finished"
    report.add("c", f"quality per time: epochs to test BCE <= {LESSON_TEST_BCE}", result,
               f"lesson: {LESSON_EPOCHS} epochs", f"{LESSON_EPOCHS / reached['epoch']:.1f}x fewer epochs" if reached
               else "", f"test BCE by epoch: {text}; time = training + validation, without this probe"
               + ("" if sizes.quality_limit_batches == 1.0 else f"; tiny: {sizes.quality_limit_batches} batches/epoch"))


def gpu_overrides(sizes: Sizes, device: torch.device) -> list[str]:
    """Row d: two whole MNIST epochs of the lesson's experiment (the second is timed); tiny: a few batches."""
    accelerator = "gpu" if device.type == "cuda" else device.type
    limit = [f"++trainer.limit_train_batches={sizes.batches}"] if sizes.tiny else []
    return ["experiment=ae_conv_mnist", "trainer.max_epochs=2", f"trainer.accelerator={accelerator}", *limit,
            "++trainer.limit_val_batches=2", "test=false", "trainer.enable_progress_bar=false"]


GPU_VARIANTS = {  # name: (overrides, extra callbacks)
    "fp32": ([], None),
    "fp32, data.on_device=false (batches copied from pinned memory)": (["data.on_device=false"], None),
    "fp32, loss read every step": ([], {"read_loss": {"_target_": callback_target(ReadLossEveryStep)}}),
    "fp32, deterministic=false, cudnn benchmark": (["trainer.deterministic=false", "++trainer.benchmark=true"], None),
    "bf16-mixed": (["trainer.precision=bf16-mixed"], None),
    "bf16-mixed + compile": (["trainer.precision=bf16-mixed", "+model.compile=true"], None),
    "bf16-mixed + compile + channels_last": (["trainer.precision=bf16-mixed", "+model.compile=true"],
                                             {"channels_last": {"_target_": callback_target(ChannelsLast)}}),
    "fp32, batch 512, deterministic=false": (["data.batch_size=512", "trainer.deterministic=false"], None),
    "bf16-mixed, batch 512, deterministic=false": (["data.batch_size=512", "trainer.deterministic=false",
                                                    "trainer.precision=bf16-mixed"], None),
    "fp32 + compile reduce-overhead (CUDA graphs)": (["+model.compile=reduce-overhead"], None),
}


def plain_epochs(cfg, device: torch.device, epochs: int = 2, limit: int | None = None) -> list[float]:
    """The plain loop with the data on the device too: seconds of each epoch (the device synchronised)."""
    images, corruption, model, optimizer = plain_parts(cfg, device)
    batch_size, seconds = int(cfg.data.batch_size), []
    for _ in range(epochs):
        _sync(device)
        start = time.perf_counter()
        for i, index in enumerate(torch.randperm(len(images), device=device).split(batch_size)):
            if limit is not None and i >= limit:
                break
            x = images.index_select(0, index).float().div_(255)
            loss = F.binary_cross_entropy_with_logits(model.decode(model.encode(corruption(x))), x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        _sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_gpu(report: Report, sizes: Sizes, work: Path, device: str | None = None) -> None:
    """Row d: seconds per MNIST training epoch on the GPU (target <= 1 s), per option, against the plain loop.
    `device` runs the same code elsewhere (the test suite: cpu, tiny, without torch.compile)."""
    print("d: GPU", flush=True)
    if device is None and not torch.cuda.is_available():
        report.add("d", "GPU: seconds per MNIST epoch, fp32 / bf16-mixed / torch.compile / channels_last",
                   "no GPU on this machine",
                   detail="on a CUDA machine this row times whole training epochs of ae_conv_mnist with the data on "
                          "the device, per option (python experiments/benchmarks/run.py --only gpu --out "
                          "experiments/benchmarks/RESULTS-gpu.md)")
        return
    dev = torch.device(device or "cuda")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{dev.type} (test of the code path)"
    base = gpu_overrides(sizes, dev)
    repeats = max(1, sizes.repeats - 4)
    results: dict[str, list[dict] | dict] = {}  # a variant that raised: {"error": its message}
    for variant, (extra, callbacks) in GPU_VARIANTS.items():
        if dev.type == "cpu" and any(o.startswith("+model.compile=") for o in extra):
            continue  # inductor on the CPU compiles for minutes: not what this row is about
        runs = []
        try:
            for r in range(repeats):
                _Instances.items.clear()
                # each aelab-train is a fresh process: here compiled frames of earlier runs (other model instances,
                # train and eval) would pile up to dynamo's recompile limit and the rest would run uncompiled
                torch._dynamo.reset()
                timer = {"epoch_time": {"_target_": callback_target(EpochTime)}}
                meter, _ = aelab_train(base + extra, work, f"gpu-{len(results)}-{r}",
                                       {**timer, **(callbacks or {})}, warmup=sizes.warmup)
                epoch = next(c for c in _Instances.items if isinstance(c, EpochTime))
                runs.append({"epoch_s": epoch.seconds, "images": epoch.images,
                             "images_per_s": meter["images_per_s"]})
                print(f"  aelab {variant}: " + ", ".join(f"{s:.2f}" for s in epoch.seconds) + " s/epoch",
                      flush=True)
        except Exception as e:  # one option failing on this GPU/torch must not lose the other rows
            runs = {"error": f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"}
            print(f"  aelab {variant}: failed: {runs['error']}", flush=True)
        results[variant] = runs
    def batch_override(extra: list[str]) -> list[str]:  # the plain loop runs each variant's batch size
        return [o for o in extra if o.startswith("data.batch_size=")]

    plain: dict[str, list[list[float]]] = {}  # by batch size ("default": the experiment's)
    for extra, _ in GPU_VARIANTS.values():
        batch = batch_override(extra)
        key = batch[0].split("=")[1] if batch else "default"
        if key not in plain:
            plain[key] = [plain_epochs(compose(base + batch, work / "plain-gpu"), dev,
                                       limit=sizes.batches if sizes.tiny else None) for _ in range(repeats)]
            print(f"  plain loop, batch {key}: {plain[key]} s/epoch", flush=True)
    report.raw["gpu"] = {"device": name, "variants": results, "plain epoch_s by batch size": plain}

    def seconds(values: list[float]) -> tuple[float, str]:
        return statistics.median(values), f"n={len(values)}, {min(values):.2f}-{max(values):.2f} s"

    for i, (variant, runs) in enumerate(results.items(), start=1):
        batch = [o.split("=")[1] for o in batch_override(GPU_VARIANTS[variant][0])]
        p, p_spread = seconds([run[-1] for run in plain[batch[0] if batch else "default"]])
        if isinstance(runs, dict):
            report.add(f"d{i}", f"GPU {name}: aelab {variant}", "failed", f"plain loop: {p:.2f} s/epoch", "",
                       runs["error"])
            continue
        m, spread = seconds([run["epoch_s"][-1] for run in runs])
        images = runs[0]["images"][-1]
        report.add(f"d{i}", f"GPU {name}: aelab {variant}", f"{m:.2f} s/epoch ({rate(images / m)})",
                   f"plain loop{', batch ' + batch[0] if batch else ''}, data on the device: {p:.2f} s/epoch",
                   f"{p / m:.2f}x", f"second of two epochs ({images:,} images), validation excluded; aelab "
                   f"{spread}; plain {p_spread}; target <= 1 s")


class EpochTime(L.Callback):
    """Row d: wall seconds of each training epoch, from its start to its last batch's end (the device synchronised
    at both ends; validation excluded), and the images it trained on."""

    def __init__(self):
        self.seconds, self.images, self._start, self._n = [], [], 0.0, 0
        _Instances.items.append(self)

    def on_train_epoch_start(self, trainer, module):
        _sync(module.device)
        self._start, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._n += len(batch[-1])
        if batch_idx == trainer.num_training_batches - 1:
            _sync(module.device)
            self.seconds.append(time.perf_counter() - self._start)
            self.images.append(self._n)


def bench_sweep(report: Report, sizes: Sizes, work: Path) -> None:
    print("e: sweep throughput (4-job grid)", flush=True)
    from aelab.config import CONFIG_DIR

    grid = ["optimizer.lr=1e-3,2e-3", "corruption=none,gaussian_noise"]
    common = [*grid, "trainer.max_epochs=1", f"++trainer.limit_train_batches={sizes.sweep_batches}",
              "++trainer.limit_val_batches=2", "test=false", "trainer.enable_progress_bar=false",
              "trainer.enable_model_summary=false", "+callbacks.throughput._target_=aelab.perf.Throughput",
              "+callbacks.throughput.out=${paths.output_dir}/throughput.json",
              f"+callbacks.throughput.warmup_batches={sizes.warmup}"]
    if sizes.tiny:
        common.append("threads=1")  # tiny checks the code path; keep the shared machine usable
    if (CONFIG_DIR / "hydra" / "launcher" / "parallel.yaml").exists():
        parallel, launcher_name = ["hydra/launcher=parallel", "hydra.launcher.n_jobs=2"], "hydra/launcher=parallel"
    else:
        parallel, launcher_name = ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], "hydra/launcher=joblib"
    results = {}
    for name, launcher in (("sequential", []), ("joblib", parallel)):
        sweep_dir = work / f"sweep-{name}"
        cmd = [sys.executable, "-m", "aelab.train", "-m", *common, *launcher, f"hydra.sweep.dir={sweep_dir}"]
        start = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800,
                              env={**os.environ, "AELAB_OUTPUT_DIR": str(work / "outputs")})
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise RuntimeError(f"sweep ({name}) failed:\n{proc.stderr[-3000:]}")
        statuses = [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/status.json"))]
        rates = [json.loads(p.read_text())["images_per_s"] for p in sorted(sweep_dir.glob("*/throughput.json"))]
        if [s["state"] for s in statuses].count("succeeded") != 4:
            errors = [f"{s['state']}: {s.get('error')}" for s in statuses]
            raise RuntimeError(f"sweep ({name}): expected 4 succeeded jobs, got {errors}")
        results[name] = {"wall_s": wall, "job_images_per_s": rates}
    report.raw["sweep"] = {**results, "grid": grid, "launcher": launcher_name}
    seq, par = results["sequential"]["wall_s"], results["joblib"]["wall_s"]
    per_job = {k: statistics.median(v["job_images_per_s"]) if v["job_images_per_s"] else float("nan")
               for k, v in results.items()}
    report.add("e", "sweep: 4-job grid, wall time of `aelab-train -m` (process start included)",
               f"{launcher_name} n_jobs=2: {par:.1f} s", f"sequential (basic launcher): {seq:.1f} s",
               f"{seq / par:.2f}x", f"grid {' '.join(grid)}, {sizes.sweep_batches} batches/job; training "
               f"throughput per job: sequential {rate(per_job['sequential'])}, parallel {rate(per_job['joblib'])}")


# --- environment and output ----------------------------------------------------------------------------------------
def cpu_seconds() -> tuple[float, float] | None:
    """(CPU seconds all processes have used since boot, CPU seconds of this process and its waited-for children).
    Their difference over the run is what other processes took: unlike the load average, which lags by minutes and
    counts our own threads, it says whether anything else competed for the cores."""
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    busy = sum(fields) - fields[3] - (fields[4] if len(fields) > 4 else 0)  # all but idle and iowait
    own = os.times()
    return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system + own.children_user + own.children_system


def machine() -> dict:
    from aelab.runs import environment

    cpu = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError, ValueError):
        kb = int(Path("/proc/meminfo").read_text().split("MemTotal:")[1].split()[0])
        mem = f"{kb / 2**20:.0f} GiB"
    env = environment()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "platform": env["platform"], "cpu": cpu, "cores": os.cpu_count(), "usable_cores": affinity,
            "memory": mem, "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "none",
            "libc": " ".join(platform.libc_ver()), "python": env["python"], "packages": env["packages"],
            "git_commit": env["git_commit"], "load_average_start": list(os.getloadavg()), "cpu_start": cpu_seconds()}


def render(report: Report, info: dict, args, wall: float) -> str:
    cols = ("id", "benchmark", "result", "compared with", "ratio", "detail")
    flags = "".join(f" {flag}" for flag, on in (("--tiny", args.tiny), ("--cpu-time", args.cpu_time)) if on)
    clock = ("CPU seconds of the benchmarking process with one torch thread (--cpu-time)" if args.cpu_time
             else "wall-clock seconds")
    others = info.get("other_processes_cores")
    busy = others is not None and others > 0.1 * info["usable_cores"]  # a tenth of the cores: 0.2 of 2
    lines = ["# aelab benchmarks", "",
             f"`python experiments/benchmarks/run.py{flags}{' --only ' + args.only if args.only else ''}` on "
             f"{info['date']}, {wall / 60:.1f} min in all"
             + (" (**tiny mode: a few batches per row, the numbers mean nothing**)" if args.tiny else "") + ".",
             f"Rows a, m, b and c time {clock}; row e times whole sweeps on the wall clock.", ""]
    if busy and not args.cpu_time:
        lines += [f"**The machine was busy**: other processes used {others:.2f} of its {info['usable_cores']} cores "
                  "on average during this run. With several processes sharing the cores, torch's threads wait for "
                  "each other and wall-clock throughput collapses; rerun on an idle machine or with --cpu-time.", ""]
    lines += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in report.rows:
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in
                                       (r.id, r.benchmark, r.result, r.baseline, r.ratio, r.detail)) + " |")
    pk = info["packages"]
    lines += ["", "## Machine", "",
              f"- CPU: {info['cpu']}, {info['cores']} logical cores ({info['usable_cores']} usable), "
              f"{info['memory']} memory; torch threads: {info['torch_threads']}; GPU: {info['gpu']}",
              f"- {info['platform']}, {info['libc']}, Python {info['python']}",
              "- " + ", ".join(f"{k} {v}" for k, v in pk.items() if v),
              f"- git: {info['git_commit']}",
              f"- load average (1/5/15 min) at start {fmt_load(info['load_average_start'])}, "
              f"at end {fmt_load(info['load_average_end'])}; other processes used "
              + ("an unknown share of the CPU" if others is None else f"{others:.2f} cores on average") +
              " during the run"]
    if report.notes:
        lines += ["", "## Notes", "", *[f"- {n}" for n in report.notes]]
    lines += ["", "Raw numbers: the JSON file beside this one.", ""]
    return "\n".join(lines)


def fmt_load(values) -> str:
    return "/".join(f"{v:.1f}" for v in values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="a few batches per row (checks the script, not speed)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"markdown report (default: {DEFAULT_OUT.relative_to(REPO)}; with --tiny a temp file)")
    parser.add_argument("--only", default="", help=f"comma-separated subset of {','.join(SECTIONS)}")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time CPU seconds of this process with one torch thread (rows a, m, b, c) instead of wall "
                             "seconds: for a machine that other processes share")
    parser.add_argument("--repeats", type=int, default=None, help="override the number of repeats per row")
    parser.add_argument("--train-batches", type=int, default=None,
                        help="override the training batches per throughput measurement (rows a, m, d)")
    parser.add_argument("--child-malloc", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--gpu-device", default=None, help=argparse.SUPPRESS)  # tests: row d's code on the cpu
    parser.add_argument("--batches", type=int, default=FULL.batches, help=argparse.SUPPRESS)
    parser.add_argument("--warmup", type=int, default=FULL.warmup, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_time:
        CLOCK.use_cpu_time()
    if args.tiny:
        torch.set_num_threads(1)  # tiny checks the code paths only; one thread wastes less of a shared machine

    data_dir = find_data_dir()
    os.environ.setdefault("AELAB_DATA_DIR", str(data_dir))
    if args.child_malloc:
        os.environ["AELAB_OUTPUT_DIR"] = os.environ["AELAB_CACHE_DIR"] = str(args.child_malloc)
        child_malloc(args.child_malloc, args.batches, args.warmup)
        return 0

    from aelab.perf import tune_malloc

    applied = tune_malloc()  # the in-process rows run as aelab-train would (row m measures the difference)
    sections = [s.strip() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        parser.error(f"--only: {unknown} not in {list(SECTIONS)}")
    sizes = TINY if args.tiny else FULL
    if args.repeats:
        sizes = dataclasses.replace(sizes, repeats=args.repeats, malloc_repeats=args.repeats)
    if args.train_batches:
        sizes = dataclasses.replace(sizes, batches=args.train_batches)
    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # banners and tips would break up the table

    report, start = Report(), time.perf_counter()
    info = machine()
    report.notes.append(f"malloc tuning in this process: {applied or 'not applied'}")
    with tempfile.TemporaryDirectory(prefix="aelab-bench-") as tmp:
        work = Path(tmp)
        os.environ["AELAB_OUTPUT_DIR"] = str(work / "outputs")
        os.environ["AELAB_CACHE_DIR"] = str(work / "cache")
        steps = {"overhead": lambda: bench_overhead(report, sizes, work),
                 "malloc": lambda: bench_malloc(report, sizes, work),
                 "data": lambda: bench_data(report, sizes, work, data_dir),
                 "quality": lambda: bench_quality(report, sizes, work),
                 "gpu": lambda: bench_gpu(report, sizes, work, args.gpu_device),
                 "sweep": lambda: bench_sweep(report, sizes, work)}
        for name in SECTIONS:
            if name in sections:
                t = time.perf_counter()
                steps[name]()
                report.notes.append(f"{name}: {time.perf_counter() - t:.0f} s")
    wall = time.perf_counter() - start
    info["load_average_end"] = list(os.getloadavg())
    if info["cpu_start"] and (end := cpu_seconds()):
        info["other_processes_cores"] = max(0.0, (end[0] - info["cpu_start"][0]) - (end[1] - info["cpu_start"][1])) / wall

    out = args.out or (Path(tempfile.gettempdir()) / "aelab-bench-tiny.md" if args.tiny else DEFAULT_OUT)
    text = render(report, info, args, wall)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": [vars(r) for r in report.rows],
                                                    "raw": report.raw, "tiny": args.tiny, "wall_s": wall},
                                                   indent=2, default=str) + "\n")
    print()
    print(text)
    print(f"written: {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
