"""Latent-space and generative figures in TensorBoard: `figures/<name>` at the end of every `every_n_epochs`-th
validation epoch (0: never), `test/figures/<name>` at the end of testing (its own tag: the test render comes at the
same global step as the last validation one and would replace it).

Each callback draws from the first test images of the datamodule, corrupted as the model sees them (same fixed
noise every time). A callback that does not apply to the model (no 2-d latent, not generative, not
super-resolution...) does nothing. Figures are drawn with matplotlib's Agg canvas directly (no pyplot, no display
needed), text at 10 pt or more.
"""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torchvision.utils import make_grid

from aelab import baselines
from aelab.callbacks.base import ModelCallback
from aelab.callbacks.images import evaluating, logged_writer, to_display
from aelab.errors import check
from aelab.models import Batch
from aelab.seeds import seeded_generator

ENCODE_CHUNK = 500
# Text sizes in points at DPI (what the PNG holds, 1 pt = DPI/72 px): at least 10 pt everywhere
DPI, TITLE_PT, LABEL_PT, TICK_PT = 100, 12, 11, 10


# --- helpers shared by the figures ---------------------------------------------------------------------------------
def test_batch(trainer: L.Trainer, module, n: int) -> Batch:
    """The first n test images, corrupted from the "figures" stream (the same input every time)."""
    return module.corrupted_batch(*trainer.datamodule.all_of("test", n), "figures")


def encode(model, x: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Flat latent codes in chunks (posterior means for VAEs)."""
    return torch.cat([model.embed(x[i:i + ENCODE_CHUNK], None if labels is None else labels[i:i + ENCODE_CHUNK])
                      for i in range(0, len(x), ENCODE_CHUNK)])


def cpu_normal(shape, device, *keys) -> torch.Tensor:
    """Gaussian noise drawn on the CPU from its own named stream: the same figure on CPU and GPU."""
    return torch.randn(shape, generator=seeded_generator("cpu", *keys)).to(device)


def pca_2d(z: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Project codes [N, D] on their two main principal axes; also returns the fraction of variance kept.
    (An eigenproblem of the smaller Gram matrix: this torch's CPU SVD takes seconds on a 256 x 512 matrix.)"""
    z = z.float().cpu()
    pca = baselines.fit_pca(z, 2)
    zc = z - pca.mean
    xy = zc @ pca.components.T
    if xy.shape[1] < 2:  # rank-1 codes: the second axis carries nothing
        xy = torch.cat([xy, torch.zeros(len(xy), 2 - xy.shape[1])], 1)
    return xy, float(xy.double().square().sum() / zc.double().square().sum().clamp_min(1e-12))


def render(fig) -> np.ndarray:
    """A matplotlib Figure as an RGB uint8 array [H, W, 3]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def grid_figure(rows: list[torch.Tensor], row_labels: list[str], title: str, shape, col_labels=None):
    """Rows of images (each [n, C, H, W]; resized to `shape` for display) with a label left of each row."""
    from matplotlib.figure import Figure

    rows = [to_display(r, shape) for r in rows]
    ncol = max(len(r) for r in rows)
    pad = 2
    grid = make_grid(torch.cat(rows), nrow=ncol, padding=pad, pad_value=1.0)
    h, w = shape[-2:]
    scale = min(0.9, max(0.45, 0.5 * max(h, w) / 28))  # inches per cell: 0.5 for 28 px, 0.9 for 64 px
    width = max(1.6 + ncol * scale, 5.0)  # room for the title at TITLE_PT
    fig = Figure(figsize=(width, 0.9 + len(rows) * scale + (0.3 if col_labels is not None else 0)), dpi=DPI)
    ax = fig.add_subplot()
    ax.imshow(grid.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_yticks([pad + i * (h + pad) + h / 2 for i in range(len(rows))], row_labels, fontsize=LABEL_PT)
    if col_labels is not None:
        ax.set_xticks([pad + j * (w + pad) + w / 2 for j in range(len(col_labels))], col_labels, fontsize=TICK_PT)
    else:
        ax.set_xticks([])
    ax.set_title(title, fontsize=TITLE_PT, wrap=True)
    fig.tight_layout()
    return fig


# --- the callbacks -------------------------------------------------------------------------------------------------
class FigureCallback(ModelCallback):
    tag = "figures/figure"

    def __init__(self, every_n_epochs: int = 1):
        check(isinstance(every_n_epochs, int) and every_n_epochs >= 0,
              f"callbacks.*.every_n_epochs must be an integer >= 0, got {every_n_epochs!r}")
        self.every_n_epochs = every_n_epochs

    def applicable(self, model) -> bool:
        """Whether the figure means anything for this model, from its declared capabilities."""
        caps = model.capabilities
        return caps.embedding is not None and caps.decodes_codes

    def why_not(self, model) -> str | None:
        if self.applicable(model):
            return None
        return f"{type(model).__name__} does not declare the capabilities {self.tag} draws (see {type(self).__name__})"

    def draw(self, trainer: L.Trainer, module):
        """A matplotlib Figure, or None to skip."""
        raise NotImplementedError

    def tag_for(self, stage: str) -> str:
        """`figures/<name>` for validation epochs, `test/figures/<name>` for the end of testing."""
        return self.tag if stage == "val" else f"{stage}/{self.tag}"

    def log_figure(self, trainer: L.Trainer, module, stage: str = "val") -> bool:
        writer = logged_writer(trainer)
        if (writer is None or trainer.sanity_checking or not trainer.is_global_zero or trainer.datamodule is None
                or not self.applies(module.model)):
            return False
        with evaluating(module):
            fig = self.draw(trainer, module)
        if fig is None:
            return False
        writer.add_image(self.tag_for(stage), render(fig), trainer.global_step, dataformats="HWC")
        return True

    def on_validation_epoch_end(self, trainer, module):
        if self.every_n_epochs and (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.log_figure(trainer, module)

    def on_test_epoch_end(self, trainer, module):
        self.log_figure(trainer, module, "test")


class LatentScatter(FigureCallback):
    """Codes of up to `n_images` test images coloured by class: the 2-d latent directly, larger codes by PCA."""

    tag = "figures/latent_scatter"

    def __init__(self, n_images: int = 2000, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        self.n_images = n_images

    def applicable(self, model) -> bool:
        return model.capabilities.embedding is not None  # it only encodes: a code without a decoder is plotted too

    def draw(self, trainer, module):
        from matplotlib.figure import Figure

        batch = test_batch(trainer, module, self.n_images)
        z = encode(module.model, batch.input, batch.label).flatten(1).float().cpu()
        labels = batch.label.cpu().numpy()
        d = z.shape[1]
        if d == 1:
            xy, title = torch.cat([z, torch.zeros_like(z)], 1), "1-d latent"
        elif d == 2:
            xy, title = z, "2-d latent"
        else:
            xy, kept = pca_2d(z)
            title = f"{d}-d latent projected by PCA to 2-d ({kept:.0%} of its variance)"
        n_classes = int(labels.max()) + 1 if len(labels) else 1
        fig = Figure(figsize=(6.4, 5.4), dpi=DPI)
        ax = fig.add_subplot()
        cmap = "tab10" if n_classes <= 10 else "nipy_spectral"
        points = ax.scatter(xy[:, 0].numpy(), xy[:, 1].numpy(), c=labels, cmap=cmap, s=4, alpha=0.7,
                            vmin=-0.5, vmax=n_classes - 0.5)
        bar = fig.colorbar(points, ax=ax, ticks=range(n_classes) if n_classes <= 10 else None)
        bar.set_label("class", fontsize=LABEL_PT)
        bar.ax.tick_params(labelsize=TICK_PT)
        ax.set_xlabel("z1" if d <= 2 else "PC 1", fontsize=LABEL_PT)
        ax.set_ylabel("z2" if d == 2 else "PC 2" if d > 2 else "", fontsize=LABEL_PT)
        ax.tick_params(labelsize=TICK_PT)
        ax.set_title(f"{title}, {len(labels)} test images", fontsize=TITLE_PT, wrap=True)
        fig.tight_layout()
        return fig


class LatentNoise(FigureCallback):
    """Noise added in latent space: codes of test images plus Gaussian noise of `scales` x the per-dimension std
    of the codes (over `std_images` test images), decoded; one row per scale."""

    tag = "figures/latent_noise"

    def __init__(self, n_images: int = 8, scales: list[float] = (0.0, 0.25, 0.5, 1.0, 2.0), std_images: int = 500,
                 every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        check(len(scales) >= 1 and all(s >= 0 for s in scales),
              f"callbacks.latent_noise.scales must be >= 0, got {scales}")
        self.n_images, self.scales, self.std_images = n_images, [float(s) for s in scales], max(2, std_images)

    def draw(self, trainer, module):
        model = module.model
        batch = test_batch(trainer, module, max(self.n_images, self.std_images))
        codes = encode(model, batch.input, batch.label)
        std = codes.std(0)
        n = min(self.n_images, len(codes))
        z, labels = codes[:n], batch.label[:n]
        rows, names = [batch.input[:n]], ["input"]
        for i, scale in enumerate(self.scales):
            noise = cpu_normal(z.shape, z.device, module.seed, "latent_noise", i)
            rows.append(model.generate(z + scale * std * noise, labels))
            names.append(f"+{scale:g} std")
        return grid_figure(rows, names, "decoded after Gaussian noise in latent space (x per-dim std of codes)",
                           tuple(batch.target.shape[1:]))


class LatentGrid(FigureCallback):
    """2-d latents only: decode a `n` x `n` grid over the latent plane. Generative models (prior N(0, I)): the
    N(0, 1) quantiles from `quantiles[0]` to `quantiles[1]` on each axis, as the Keras VAE example; plain
    autoencoders: the same quantiles of the encoded test codes."""

    tag = "figures/latent_grid"

    def __init__(self, n: int = 15, quantiles: list[float] = (0.05, 0.95), n_images: int = 2000,
                 every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        check(0 < quantiles[0] < quantiles[1] < 1,
              f"callbacks.latent_grid.quantiles must be 0 < q0 < q1 < 1, got {quantiles}")
        self.n, self.quantiles, self.n_images = n, (float(quantiles[0]), float(quantiles[1])), n_images

    def applicable(self, model) -> bool:
        caps = model.capabilities
        return caps.embedding is not None and caps.embedding.size == 2 and caps.decodes_codes and not caps.conditional

    def draw(self, trainer, module):
        model = module.model
        q = torch.linspace(*self.quantiles, self.n, dtype=torch.float64)
        if model.capabilities.prior == "standard_normal":
            axes = [torch.distributions.Normal(0.0, 1.0).icdf(q).float()] * 2
            what = f"N(0,1) quantiles {self.quantiles[0]:g}..{self.quantiles[1]:g}"
        else:
            batch = test_batch(trainer, module, self.n_images)
            flat = encode(model, batch.input, batch.label).double().cpu()
            axes = [torch.quantile(flat[:, i], q).float() for i in range(2)]
            what = f"quantiles {self.quantiles[0]:g}..{self.quantiles[1]:g} of encoded test codes"
        xs, ys = axes[0], axes[1].flip(0)  # y grows upwards, as in a scatter plot
        z = torch.stack(torch.meshgrid(ys, xs, indexing="ij")[::-1], -1).reshape(-1, 2)
        images = model.generate(z.to(module.device))
        shape = tuple(images.shape[1:])
        rows = list(images.reshape(self.n, self.n, *shape))
        return grid_figure(rows, [f"{v:.2f}" for v in ys.tolist()], f"decoded 2-d latent grid over {what}", shape,
                           col_labels=[f"{v:.2f}" for v in xs.tolist()])


class PriorSamples(FigureCallback):
    """Generative models: `n_images` images decoded from the prior (a fixed generator: the same z every epoch)."""

    tag = "figures/prior_samples"

    def __init__(self, n_images: int = 64, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        self.n_images = n_images

    def applicable(self, model) -> bool:
        return model.capabilities.prior is not None

    def draw(self, trainer, module):
        generator = seeded_generator(module.device, module.seed, "prior_samples")
        images = module.model.sample(self.n_images, generator=generator)
        ncol = max(1, int(self.n_images ** 0.5))
        rows = list(images.split(ncol))
        if len(rows) > 1 and len(rows[-1]) < ncol:
            rows.pop()
        return grid_figure(rows, [""] * len(rows), "samples decoded from the prior", tuple(images.shape[1:]))


class LatentInterpolation(FigureCallback):
    """Generative models: straight lines in latent space between the codes of pairs of test images, decoded."""

    tag = "figures/interpolation"

    def __init__(self, n_pairs: int = 4, steps: int = 10, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        check(steps >= 2, f"callbacks.interpolation.steps must be >= 2, got {steps!r}")
        self.n_pairs, self.steps = n_pairs, steps

    def applicable(self, model) -> bool:
        caps = model.capabilities
        return caps.prior is not None and caps.decodes_codes and not caps.conditional

    def draw(self, trainer, module):
        model = module.model
        batch = test_batch(trainer, module, 2 * self.n_pairs)
        pairs = min(self.n_pairs, len(batch.input) // 2)
        if pairs == 0:
            return None
        lines = model.interpolate(batch.input[0:2 * pairs:2], batch.input[1:2 * pairs:2], self.steps)
        rows, names = [], []
        for p, line in enumerate(lines):
            ends = batch.input[2 * p:2 * p + 2]
            rows.append(torch.cat([to_display(ends[:1], line.shape[1:]).to(line.device), line,
                                   to_display(ends[1:], line.shape[1:]).to(line.device)]))
            names.append(f"{int(batch.label[2 * p])} -> {int(batch.label[2 * p + 1])}")
        return grid_figure(rows, names, "input | decoded latent interpolation | input", tuple(batch.target.shape[1:]))


class ClassSamples(FigureCallback):
    """Conditional generative models: one row of `per_class` prior samples for each class (up to `max_classes`)."""

    tag = "figures/class_samples"

    def __init__(self, per_class: int = 10, max_classes: int = 20, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        self.per_class, self.max_classes = per_class, max_classes

    def applicable(self, model) -> bool:
        caps = model.capabilities
        return caps.conditional and caps.prior is not None

    def draw(self, trainer, module):
        model = module.model
        generator = seeded_generator(module.device, module.seed, "class_samples")
        rows, names = [], []
        for c in range(min(int(model.num_classes), self.max_classes)):
            labels = torch.full((self.per_class,), c, dtype=torch.long, device=module.device)
            rows.append(model.sample(self.per_class, generator=generator, labels=labels))
            names.append(f"class {c}")
        return grid_figure(rows, names, "prior samples, one row per class", tuple(rows[0].shape[1:]))


class NoiseInput(FigureCallback):
    """Super-resolution models (input smaller than output): feed pure noise at the input size and look at what the
    model makes of it (the lesson's exercise with the x4 model). Rows: uniform noise, output, Gaussian noise
    N(0.5, 0.5) clipped, output."""

    tag = "figures/noise_input"

    def __init__(self, n_images: int = 8, every_n_epochs: int = 1):
        super().__init__(every_n_epochs)
        self.n_images = n_images

    def applicable(self, model) -> bool:
        return tuple(model.input_shape[1:]) != tuple(model.output_shape[1:])

    def draw(self, trainer, module):
        model, n, device = module.model, self.n_images, module.device
        generator = seeded_generator("cpu", module.seed, "noise_input")
        uniform = torch.rand((n, *model.input_shape), generator=generator).to(device)
        gaussian = (0.5 + 0.5 * torch.randn((n, *model.input_shape), generator=generator)).clamp(0, 1).to(device)
        labels = torch.arange(n, device=device) % int(model.num_classes or 1)
        target = torch.zeros((n, *model.output_shape), device=device)
        rows = []
        for noise in (uniform, gaussian):
            rows += [noise, model.reconstruct(Batch(input=noise, target=target, label=labels))]
        c, h, w = model.input_shape
        return grid_figure(rows, ["U(0,1) input", "output", "N(.5,.5) input", "output"],
                           f"pure noise at the model's {h}x{w} input -> its {model.output_shape[1]}x"
                           f"{model.output_shape[2]} output", tuple(model.output_shape))
