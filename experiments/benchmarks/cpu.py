"""The CPU rows: a (framework overhead: aelab training vs a plain PyTorch loop), m (malloc tuning, fresh processes),
b (data path: in-memory batches vs torchvision's per-sample DataLoader), c (quality per time: epochs to the lesson's
test BCE)."""

from __future__ import annotations

import copy
import gc
import gzip
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate

from aelab.seeds import seeded_generator
from experiments.benchmarks.harness import (CLOCK, Report, Sizes, aelab_train, callback_target, compose,
                                            find_callback, median_spread, plain_parts, plain_step, rate,
                                            train_overrides)

RUN_SCRIPT = Path(__file__).resolve().with_name("run.py")  # row m's children run the benchmark script itself
LESSON_TEST_BCE = 0.0953  # the lesson's conv AE on MNIST after 25 epochs
LESSON_EPOCHS = 25


# --- row a ---------------------------------------------------------------------------------------------------------
def plain_loop(cfg, n_batches: int, warmup: int) -> float:
    """The same model/data/batch size/optimizer as `cfg`, trained on the CPU by the shortest correct PyTorch loop:
    its own batches from a seeded shuffle, corrupted by the run's Corruption from a seeded stream."""
    images, corruption, model, optimizer = plain_parts(cfg)
    batch_size = int(cfg.data.batch_size)
    order = torch.randperm(len(images), generator=seeded_generator("cpu", cfg.seed, "bench/plain/order"))
    noise = seeded_generator("cpu", cfg.seed, "bench/plain/corruption")
    n_batches = min(n_batches, len(order) // batch_size)
    start, seen = None, 0
    for i in range(n_batches):
        x = images[order[i * batch_size:(i + 1) * batch_size]].float().div_(255)
        plain_step(model, optimizer, corruption(x, noise), x)
        if i == warmup - 1:
            start = CLOCK.now()
        elif i >= warmup:
            seen += len(x)
    return seen / (CLOCK.now() - start)


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


# --- row m ---------------------------------------------------------------------------------------------------------
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
            cmd = [sys.executable, str(RUN_SCRIPT), "--child-malloc", str(work / f"malloc-{r}"),
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


# --- row b ---------------------------------------------------------------------------------------------------------
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

    from aelab.build import build_parts
    from aelab.module import AutoencoderModule

    cfg = compose(["experiment=ae_conv_mnist", "corruption=gaussian_noise"], work / "data")
    torch.manual_seed(cfg.seed)
    parts = build_parts(cfg)  # data, the lesson's noise (mean 0.5 / std 0.5, clipped) and the initial model
    noise, dm, batch_size = parts.corruption, parts.datamodule, int(cfg.data.batch_size)
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
            return noise(x), x, y  # the same Corruption, per sample, from torch's global stream

    def aelab_batches(noisy: bool):
        """aelab's in-memory batches, corrupted as a training step corrupts them (AutoencoderModule.make_batch)."""
        module = AutoencoderModule(parts.model, noise if noisy else None, seed=cfg.seed)
        for raw in dm.train_dataloader():
            batch = module.make_batch(raw, "train")
            yield batch.input, batch.target

    def torchvision_batches(noisy: bool):
        loader = DataLoader(NoisyPairs(tv_clean) if noisy else tv_clean, batch_size=batch_size, shuffle=True,
                            num_workers=0)
        for item in loader:
            yield (item[0], item[1]) if noisy else (item[0], item[0])

    def measure(batches, train: bool) -> float:
        model = optimizer = None
        if train:  # every measurement starts from the same initial weights
            model = copy.deepcopy(parts.model)
            optimizer = instantiate(cfg.optimizer)(params=model.parameters())
        start, seen = None, 0
        for i, (inputs, target) in enumerate(batches):
            if train:
                plain_step(model, optimizer, inputs, target)
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


# --- row c ---------------------------------------------------------------------------------------------------------
class QualityProbe(L.Callback):
    """Test BCE after every validation epoch; stops training once it reaches `target`. Its own evaluation time is
    subtracted from the elapsed time it records. The test images are corrupted by module.corrupted_batch from
    their own seeded streams ("bench/quality/<chunk>"), leaving the training streams alone."""

    def __init__(self, target: float, limit: int | None = None):
        super().__init__()
        self.target, self.limit, self.curve, self.probe_s, self.t0 = target, limit, [], 0.0, None

    def on_train_start(self, trainer, module):
        self.t0 = CLOCK.now()

    def on_validation_epoch_end(self, trainer, module):
        if trainer.sanity_checking:
            return
        start = CLOCK.now()
        images, labels = trainer.datamodule.all_of("test", self.limit)
        total, count = 0.0, 0
        was_training = module.training
        module.eval()
        with torch.no_grad():
            for i, (chunk, chunk_labels) in enumerate(zip(images.split(1000), labels.split(1000))):
                terms = module.model.loss(module.corrupted_batch(chunk, chunk_labels, f"bench/quality/{i}"))
                total, count = total + float(terms.terms["recon_loss"]) * len(chunk), count + len(chunk)
        module.train(was_training)
        self.probe_s += CLOCK.now() - start
        bce = total / count
        self.curve.append({"epoch": trainer.current_epoch + 1, "test_bce": bce,
                           "train_s": CLOCK.now() - self.t0 - self.probe_s})
        if bce <= self.target:
            trainer.should_stop = True


def bench_quality(report: Report, sizes: Sizes, work: Path) -> None:
    print("c: quality per time (experiment=ae_conv_mnist to the lesson's test BCE)", flush=True)
    overrides = ["experiment=ae_conv_mnist", f"trainer.max_epochs={sizes.quality_max_epochs}",
                 f"++trainer.limit_train_batches={sizes.quality_limit_batches}", "test=false",
                 "trainer.enable_progress_bar=false"]
    if sizes.quality_limit_batches != 1.0:
        overrides.append("++trainer.limit_val_batches=2")
    probe_cfg = {"_target_": callback_target(QualityProbe), "target": LESSON_TEST_BCE,
                 "limit": None if sizes.quality_limit_batches == 1.0 else 1000}  # tiny: part of the test set
    start = time.perf_counter()
    _, run = aelab_train(overrides, work, "quality", extra_callbacks={"quality_probe": probe_cfg})
    total = time.perf_counter() - start
    curve = find_callback(run, QualityProbe).curve
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
