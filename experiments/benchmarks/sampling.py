"""Row p: the VQ-VAE prior's ancestral sampling on the CPU, per number of maps in one pass of the net, on every torch
thread against one, and the chunked draw aelab uses against a single pass over the same maps.

The PixelCNN runs once per position of the index map, so a small pass makes many small convolutions (where threads
may cost more in synchronisation than they save) and a large one few large ones (which may fall out of the caches).
vqvae_prior_mnist draws 10,000 maps for its sample-quality sets and a few dozen for its figures; this row says what
aelab.models.vqvae_prior.SAMPLE_CHUNK should be and whether sampling keeps every thread (under --cpu-time every
thread count is 1 and the row means nothing). The net is the preset's (conf/experiment/vqvae_prior_mnist.yaml:
width, layers; the first stage's codebook and index map, from conf/experiment/vqvae_mnist.yaml) with seeded random
weights: sampling time does not depend on what the weights learned."""

from __future__ import annotations

import contextlib
import statistics

import torch

from aelab.build import make
from aelab.models.vqvae_prior import SAMPLE_CHUNK, PixelCNN, sample_raster
from aelab.seeds import seeded_generator
from experiments.benchmarks.harness import CLOCK, Report, compose

BATCHES = (16, 64, 256, 1000)
LARGE_DRAW = 2000  # the chunked draw against one pass; TINY: 32
MNIST = (1, 28, 28)
TINY_BATCHES = (4, 16)


@contextlib.contextmanager
def exactly_threads(n: int):
    """torch's intra-op threads set to `n` inside the block, restored after it."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def time_sampling(net: torch.nn.Module, n: int, map_shape, threads: int, repeats: int,
                  chunk: int | None = None) -> list[float]:
    """Seconds per 1,000 maps, one value per repeat, `n` maps sampled on exactly `threads` torch threads in chunks
    of `chunk` maps (None: all `n` in one pass)."""
    out = []
    with exactly_threads(threads):
        for r in range(repeats):
            generator = seeded_generator("cpu", 0, "bench/sampling", n, r)
            start = CLOCK.now()
            sample_raster(net, n, map_shape, generator, chunk=chunk or n)
            out.append((CLOCK.now() - start) / n * 1000)
    return out


def spread(values: list[float]) -> str:
    return f"n={len(values)}" + (f", {min(values):.2f}-{max(values):.2f}" if len(values) > 1 else "")


def bench_sampling(report: Report, sizes, work) -> None:
    prior = compose(["experiment=vqvae_prior_mnist"], work / "sampling").model
    first = compose(["experiment=vqvae_mnist"], work / "sampling").model
    torch.manual_seed(0)
    map_shape = make(first, "model", input_shape=MNIST, output_shape=MNIST, num_classes=None).map_shape
    net = PixelCNN(int(first.codebook_size), int(prior.width), int(prior.layers)).eval()
    h, w = map_shape
    every = max(1, torch.get_num_threads())
    raw = report.raw.setdefault("sampling", {"threads": every, "batches": {}})
    for k, n in enumerate(TINY_BATCHES if sizes.tiny else BATCHES, start=1):  # p1..: one pass of n maps
        repeats = 1 if sizes.tiny else (3 if n <= 256 else 2)
        sample_raster(net, min(n, 16), map_shape, seeded_generator("cpu", 0, "bench/sampling/warmup"))
        one = time_sampling(net, n, map_shape, 1, repeats)
        many = time_sampling(net, n, map_shape, every, repeats)
        raw["batches"][str(n)] = {"one_thread": one, "all_threads": many}  # each n in one pass
        m1, mm = statistics.median(one), statistics.median(many)
        report.add(f"p{k}", f"PixelCNN ancestral sampling, {n} maps of {h}x{w} in one pass, {every} threads vs 1",
                   f"{mm:.2f} s per 1,000 maps", f"{m1:.2f} s on 1 thread", f"{m1 / mm:.2f}x",
                   f"{CLOCK.name} clock; {every} threads {spread(many)}; 1 thread {spread(one)}")
    batches = TINY_BATCHES if sizes.tiny else BATCHES
    n = 32 if sizes.tiny else LARGE_DRAW
    repeats = 1 if sizes.tiny else 2
    chunked = time_sampling(net, n, map_shape, every, repeats, SAMPLE_CHUNK)
    whole = time_sampling(net, n, map_shape, every, repeats)
    raw["large_draw"] = {"maps": n, "chunk": SAMPLE_CHUNK, "chunked": chunked, "one_pass": whole}
    mc, mw = statistics.median(chunked), statistics.median(whole)
    report.add(f"p{len(batches) + 1}", f"PixelCNN ancestral sampling, a draw of {n} maps in chunks of {SAMPLE_CHUNK} "
               f"(SAMPLE_CHUNK) vs one pass, {every} threads", f"{mc:.2f} s per 1,000 maps",
               f"{mw:.2f} s in one pass", f"{mw / mc:.2f}x",
               f"{CLOCK.name} clock; chunked {spread(chunked)}; one pass {spread(whole)}")
