"""Row g: does `capture_step` pay on a GPU? Seconds per training epoch of the eager step (trainer defaults, and with
fused Adam) against the captured step (fused Adam), for ae_conv_mnist at batch 128 and 512 and the reference VAE on
binarized MNIST (vae_binarized), each with the validation loss both reached, so speed and agreement are read side by
side; the plain loop beside ae_conv_mnist. Targets: ae_conv_mnist <= 0.75 s (batch 128) and <= 0.25 s (batch 512),
vae_binarized <= 1.0 s per epoch."""

from __future__ import annotations

import statistics
from pathlib import Path

import torch

from experiments.benchmarks.gpu import gpu_overrides, plain_epochs, run_variant
from experiments.benchmarks.harness import Report, Sizes, compose, error_line, rate

GROUPS = {  # name: (experiment, overrides, target seconds per epoch)
    "ae_conv_mnist, batch 128": ("ae_conv_mnist", [], 0.75),
    "ae_conv_mnist, batch 512": ("ae_conv_mnist", ["data.batch_size=512"], 0.25),
    "vae_binarized, batch 128": ("vae_binarized", [], 1.0),
}
STEPS = {  # how each group trains; "captured" is compared with both eager ones
    "eager": [],
    "eager, fused Adam": ["+optimizer.fused=true"],
    "captured, fused Adam": ["capture_step=true", "+optimizer.fused=true"],
}


def loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.6g}"


def bench_capture(report: Report, sizes: Sizes, work: Path, device: str | None = None) -> None:
    """Row g (on the CPU, with `device="cpu"`, the same code runs and capture falls back to the eager step)."""
    print("g: captured step on the GPU", flush=True)
    if device is None and not torch.cuda.is_available():
        report.add("g", "GPU: eager against captured training step (capture_step)", "no GPU on this machine",
                   detail="on a CUDA machine: python experiments/benchmarks/run.py --only capture")
        return
    dev = torch.device(device or "cuda")
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"{dev.type} (test of the code path)"
    repeats = max(1, sizes.repeats - 4)
    results: dict[str, dict] = {}
    for group, (experiment, extra, target) in GROUPS.items():
        base = gpu_overrides(sizes, dev, experiment) + extra
        steps: dict[str, list[dict] | dict] = {}
        for step, overrides in STEPS.items():
            try:
                steps[step] = run_variant(base, overrides, None, repeats, sizes, work, f"capture-{len(results)}-{step}")
                print(f"  {group}, {step}: " + ", ".join(f"{r['epoch_s'][-1]:.2f}" for r in steps[step])
                      + " s/epoch", flush=True)
            except Exception as e:  # one step failing on this GPU/torch must not lose the others
                steps[step] = {"error": error_line(e)}
                print(f"  {group}, {step}: failed: {steps[step]['error']}", flush=True)
        plain = None
        if experiment == "ae_conv_mnist":  # the plain loop trains the lesson's autoencoder only
            plain = [plain_epochs(compose(base, work / "plain-capture"), dev,
                                  limit=sizes.batches if sizes.tiny else None)[-1] for _ in range(repeats)]
        results[group] = {"experiment": experiment, "target_s": target, "steps": steps, "plain_epoch_s": plain}
    report.raw["capture"] = {"device": name, "groups": results}
    numbers = report.raw["capture"]["rows"] = []

    for i, (group, res) in enumerate(results.items(), start=1):
        def median(step: str) -> float | None:
            runs = res["steps"][step]
            return None if isinstance(runs, dict) else statistics.median(r["epoch_s"][-1] for r in runs)

        def val_loss(step: str) -> float | None:
            runs = res["steps"][step]
            return None if isinstance(runs, dict) else runs[0]["val_loss"]

        seconds = {step: median(step) for step in STEPS}
        losses = {step: val_loss(step) for step in STEPS}
        cap, eager, fused = seconds["captured, fused Adam"], seconds["eager"], seconds["eager, fused Adam"]
        errors = "; ".join(f"{s}: {r['error']}" for s, r in res["steps"].items() if isinstance(r, dict))
        if cap is None or eager is None or fused is None:
            report.add(f"g{i}", f"GPU {name}: {group}, captured step", "failed", "", "", errors)
            continue
        images = res["steps"]["captured, fused Adam"][0]["images"][-1]
        a, b = losses["captured, fused Adam"], losses["eager, fused Adam"]
        rel = abs(a - b) / abs(b) if a is not None and b else float("nan")
        plain = statistics.median(res["plain_epoch_s"]) if res["plain_epoch_s"] else None
        numbers.append({"group": group, "experiment": res["experiment"], "gpu": name,
                        "seconds_per_epoch": seconds, "val_loss": losses, "val_loss_rel_diff": rel,
                        "plain_seconds_per_epoch": plain, "target_seconds_per_epoch": res["target_s"]})
        report.add(f"g{i}", f"GPU {name}: {group}, captured step (capture_step=true, fused Adam)",
                   f"{cap:.2f} s/epoch ({rate(images / cap)})",
                   f"eager: {eager:.2f} s/epoch; eager, fused Adam: {fused:.2f} s/epoch"
                   + (f"; plain loop: {plain:.2f} s/epoch" if plain else ""),
                   f"{eager / cap:.2f}x over eager, {fused / cap:.2f}x over eager fused",
                   f"second of two epochs ({images:,} images), validation excluded, median of {repeats}; val/loss "
                   f"captured {loss(a)}, eager fused {loss(b)} (relative difference {rel:.1e}), eager "
                   f"{loss(losses['eager'])}; target <= {res['target_s']} s")
