"""Row d: seconds per MNIST training epoch of ae_conv_mnist on the GPU with the data kept on the device, per option
(fp32, pinned-memory copies, a per-step loss read, deterministic off, bf16-mixed, torch.compile, channels_last,
batch 512, CUDA graphs), against the plain loop with its data on the device too; target <= 1 s."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import lightning as L
import torch

from aelab.seeds import seeded_generator
from experiments.benchmarks.harness import (Report, Sizes, aelab_train, callback_target, compose, error_line,
                                            find_callback, plain_parts, plain_step, rate, sync)


class ChannelsLast(L.Callback):
    """Model weights in channels_last memory format (faster convolutions with tensor cores)."""

    def on_fit_start(self, trainer, module):
        module.to(memory_format=torch.channels_last)


class ReadLossEveryStep(L.Callback):
    """Read the loss on the CPU after every step, as a per-step NaN check would (the CPU then waits for the GPU at
    every step instead of queueing the next one); aelab's FiniteLoss reads it every 50 steps on a GPU."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        float(outputs["loss"])


class EpochTime(L.Callback):
    """Wall seconds of each training epoch, from its start to its last batch's end (the device synchronised at both
    ends; validation excluded), and the images it trained on."""

    def __init__(self):
        self.seconds, self.images, self._start, self._n = [], [], 0.0, 0

    def on_train_epoch_start(self, trainer, module):
        sync(module.device)
        self._start, self._n = time.perf_counter(), 0

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self._n += len(batch[0])
        if batch_idx == trainer.num_training_batches - 1:
            sync(module.device)
            self.seconds.append(time.perf_counter() - self._start)
            self.images.append(self._n)


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
    "fp32, captured step (capture_step), fused Adam": (["capture_step=true", "+optimizer.fused=true"], None),
    "fp32, batch 512, captured step, fused Adam, deterministic=false": (
        ["data.batch_size=512", "capture_step=true", "+optimizer.fused=true", "trainer.deterministic=false"], None),
}


def gpu_overrides(sizes: Sizes, device: torch.device, experiment: str = "ae_conv_mnist") -> list[str]:
    """Two whole MNIST epochs of an experiment (the second is timed; the lesson's by default); tiny: a few batches."""
    accelerator = "gpu" if device.type == "cuda" else device.type
    limit = [f"++trainer.limit_train_batches={sizes.batches}"] if sizes.tiny else []
    return [f"experiment={experiment}", "trainer.max_epochs=2", f"trainer.accelerator={accelerator}", *limit,
            "++trainer.limit_val_batches=2", "test=false", "trainer.enable_progress_bar=false"]


def plain_epochs(cfg, device: torch.device, epochs: int = 2, limit: int | None = None) -> list[float]:
    """The plain loop with the data on the device too: seconds of each epoch (the device synchronised)."""
    images, corruption, model, optimizer = plain_parts(cfg, device)
    batch_size, seconds = int(cfg.data.batch_size), []
    order = seeded_generator(device, cfg.seed, "bench/plain/order")
    noise = seeded_generator(device, cfg.seed, "bench/plain/corruption")
    for _ in range(epochs):
        sync(device)
        start = time.perf_counter()
        for i, index in enumerate(torch.randperm(len(images), device=device, generator=order).split(batch_size)):
            if limit is not None and i >= limit:
                break
            x = images.index_select(0, index).float().div_(255)
            plain_step(model, optimizer, corruption(x, noise), x)
        sync(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def batch_override(extra: list[str]) -> list[str]:
    """A variant's batch size override: the plain loop runs each variant's batch size."""
    return [o for o in extra if o.startswith("data.batch_size=")]


def run_variant(base: list[str], extra: list[str], callbacks: dict | None, repeats: int, sizes: Sizes,
                work: Path, tag: str) -> list[dict]:
    runs = []
    for r in range(repeats):
        # each aelab-train is a fresh process: here compiled frames of earlier runs (other model instances, train
        # and eval) would pile up to dynamo's recompile limit and the rest would run uncompiled
        torch._dynamo.reset()
        timer = {"epoch_time": {"_target_": callback_target(EpochTime)}}
        meter, run = aelab_train(base + extra, work, f"{tag}-{r}", {**timer, **(callbacks or {})},
                                 warmup=sizes.warmup)
        epoch = find_callback(run, EpochTime)
        val = run.trainer.callback_metrics.get("val/loss")
        runs.append({"epoch_s": epoch.seconds, "images": epoch.images, "images_per_s": meter["images_per_s"],
                     "val_loss": float(val) if val is not None else None})
    return runs


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
        try:
            runs = run_variant(base, extra, callbacks, repeats, sizes, work, f"gpu-{len(results)}")
            for run in runs:
                print(f"  aelab {variant}: " + ", ".join(f"{s:.2f}" for s in run["epoch_s"]) + " s/epoch",
                      flush=True)
        except Exception as e:  # one option failing on this GPU/torch must not lose the other rows
            runs = {"error": error_line(e)}
            print(f"  aelab {variant}: failed: {runs['error']}", flush=True)
        results[variant] = runs

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

    numbers = report.raw["gpu"]["rows"] = []  # each row's figures as numbers, for scripts reading the JSON

    for i, (variant, runs) in enumerate(results.items(), start=1):
        batch = [o.split("=")[1] for o in batch_override(GPU_VARIANTS[variant][0])]
        p, p_spread = seconds([run[-1] for run in plain[batch[0] if batch else "default"]])
        if isinstance(runs, dict):
            report.add(f"d{i}", f"GPU {name}: aelab {variant}", "failed", f"plain loop: {p:.2f} s/epoch", "",
                       runs["error"])
            continue
        m, spread = seconds([run["epoch_s"][-1] for run in runs])
        images = runs[0]["images"][-1]
        numbers.append({"experiment": "ae_conv_mnist", "gpu": name, "variant": variant,
                        "batch_size": int(batch[0]) if batch else int(compose(base, work / "cfg").data.batch_size),
                        "seconds_per_epoch": m, "plain_seconds_per_epoch": p})
        report.add(f"d{i}", f"GPU {name}: aelab {variant}", f"{m:.2f} s/epoch ({rate(images / m)})",
                   f"plain loop{', batch ' + batch[0] if batch else ''}, data on the device: {p:.2f} s/epoch",
                   f"{p / m:.2f}x", f"second of two epochs ({images:,} images), validation excluded; aelab "
                   f"{spread}; plain {p_spread}; target <= 1 s")
