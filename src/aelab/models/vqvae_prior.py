"""The VQ-VAE's second stage: an autoregressive prior over the first stage's index maps, so the pair can sample.

    aelab-train experiment=vqvae_mnist                                   # stage 1 -> RUN/checkpoints/best.ckpt
    aelab-train experiment=vqvae_prior_mnist model.first_stage=RUN/checkpoints/best.ckpt

`VQVAEPrior` loads the first stage (a `VQVAE` checkpoint written by aelab-train, rebuilt from the model config it
records), freezes it and trains only a small PixelCNN (van den Oord et al., 2016: masked convolutions, each index
predicted from the ones above it and to its left) on the index maps of the training images. Its loss is the negative
log-likelihood of an image's index map in nats. Samples are drawn index by index in raster order and decoded by the
frozen first stage; reconstructions, codes and figures are the first stage's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from aelab.checkpoints import load_checkpoint, model_name
from aelab.errors import CheckpointError, ConfigError
from aelab.models.base import Autoencoder
from aelab.models.contract import Batch, LossTerms, Term
from aelab.models.vqvae import VQVAE
from aelab.types import PositiveInt

NLL_PER_INDEX = Term("nll_per_index", "-log p(index) of the prior per position of the index map, in nats (the loss "
                                      "is this times the positions per map; log(codebook_size) for a uniform prior)")
HOW_TO = "train one with experiment=vqvae_mnist and pass its checkpoints/best.ckpt"


class MaskedConv2d(nn.Conv2d):
    """A conv whose output at a position sees only the positions before it in raster order: the rows above and the
    left part of its own row; mask "A" also hides the position itself (the first layer, which reads the indices
    being predicted), "B" lets it through (later layers, whose input at a position already excludes it)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask: str):
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        keep = torch.zeros(kernel_size, kernel_size)
        centre = kernel_size // 2
        keep[:centre] = 1
        keep[centre, :centre + (mask == "B")] = 1
        self.register_buffer("mask", keep[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class PixelCNN(nn.Module):
    """Index map [B, h, w] -> logits [B, K, h, w]: an embedding of the indices, a mask-A conv, `layers` residual
    mask-B convs and a 1x1 head."""

    def __init__(self, codebook_size: int, width: int, layers: int, first_kernel: int = 7):
        super().__init__()
        self.embed = nn.Embedding(codebook_size, width)
        self.first = MaskedConv2d(width, width, first_kernel, "A")
        self.blocks = nn.ModuleList(MaskedConv2d(width, width, 3, "B") for _ in range(layers))
        self.head = nn.Sequential(nn.ReLU(), nn.Conv2d(width, width, 1), nn.ReLU(), nn.Conv2d(width, codebook_size, 1))

    def forward(self, indices: torch.Tensor) -> torch.Tensor:
        h = self.first(self.embed(indices).permute(0, 3, 1, 2))
        for block in self.blocks:
            h = h + block(F.relu(h))
        return self.head(h)


# Maps sampled per pass of the net: on the CPU a pass over a few dozen maps costs least per map, and one over
# thousands several times more (experiments/benchmarks/RESULTS-sampling.md, row p), so a large draw (the
# sample-quality sets) runs in chunks of this many
SAMPLE_CHUNK = 64


@torch.no_grad()
def sample_raster(net: nn.Module, n: int, map_shape: tuple[int, int], generator: torch.Generator | None = None,
                  chunk: int = SAMPLE_CHUNK) -> torch.Tensor:
    """`n` index maps [n, h, w] drawn from `net` (index map -> logits, as PixelCNN) position by position in raster
    order (ancestral sampling), `chunk` maps at a time, one generator stream through the chunks in order."""
    h, w = map_shape
    device = next(net.parameters()).device
    indices = torch.zeros(n, h, w, dtype=torch.long, device=device)
    for start in range(0, n, chunk):
        part = indices[start:start + chunk]
        for i in range(h):
            for j in range(w):
                # row i depends on rows 0..i only (no convolution looks down): the rows below are not computed
                probs = F.softmax(net(part[:, :i + 1])[:, :, i, j].float(), dim=1)
                part[:, i, j] = torch.multinomial(probs, 1, generator=generator)[:, 0]
    return indices


def load_first_stage(path: str | None, input_shape) -> VQVAE:
    """The frozen VQVAE of a checkpoint, rebuilt from its recorded model config; one-line errors naming the key."""
    if path is None:
        raise ConfigError(f"model.first_stage is not set: the prior needs a trained VQ-VAE checkpoint; {HOW_TO}, "
                          "e.g. model.first_stage=outputs/runs/<date>/<time>/checkpoints/best.ckpt")
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as e:
        raise CheckpointError(f"{str(e).replace(f'ckpt_path={path}', f'model.first_stage={path}', 1)}; "
                              f"{HOW_TO}") from None
    info = ckpt["aelab"]
    cfg = dict(info["model"])
    if model_name(cfg) != VQVAE.__name__:
        raise CheckpointError(f"model.first_stage={path} holds a {model_name(cfg)}, not a VQVAE first stage; {HOW_TO}")
    if list(info["input_shape"]) != list(input_shape):
        raise CheckpointError(f"model.first_stage={path} was trained on input images of shape "
                              f"{tuple(info['input_shape'])}, this data/corruption gives {tuple(input_shape)}")
    from aelab.build import make  # the builder validates the recorded config as it would the command line's

    cfg.pop("compile", None)
    first = make(cfg, "model.first_stage", input_shape=info["input_shape"], output_shape=info["output_shape"],
                 num_classes=None)
    prefix = "model."
    first.load_state_dict({k[len(prefix):]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)})
    return first.requires_grad_(False).eval()


class VQVAEPrior(Autoencoder):
    """A PixelCNN prior (`width` channels, `layers` residual masked convs) over the index maps of the frozen VQVAE
    in `first_stage` (a checkpoint path). Its loss is the index map's NLL in nats per image (weight 1; nothing else
    is minimised); `output`, and so PSNR and SSIM, are the first stage's reconstructions. `aelab-eval` of a prior's
    checkpoint reads the first stage's checkpoint again from its recorded path (the weights come from the prior's own
    checkpoint, which holds both)."""

    terms = (NLL_PER_INDEX,)
    prior = "learned"
    code_pooling = VQVAE.code_pooling

    def __init__(self, *args, first_stage: str | None = None, width: PositiveInt = 32, layers: PositiveInt = 5,
                 **kwargs):
        super().__init__(*args, **kwargs)
        self.first_stage_path = first_stage
        self.first = load_first_stage(first_stage, self.input_shape)
        self.net = PixelCNN(self.first.codebook_size, width, layers)

    def train(self, mode: bool = True):
        super().train(mode)
        self.first.eval()  # frozen: its batch-norm statistics and codebook stay as trained
        return self

    def parameter_groups(self) -> list[list[nn.Parameter]]:
        return [list(self.net.parameters())]

    # --- the first stage's codes and images ------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.first.encode(x)

    def decode(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        return self.first.decode(z)

    # --- the prior -------------------------------------------------------------------------------------------------
    def index_nll(self, indices: torch.Tensor) -> torch.Tensor:
        """-log p(index map) per image [B], in nats."""
        logits = self.net(indices)
        return F.cross_entropy(logits.float(), indices, reduction="none").flatten(1).sum(1)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        with torch.no_grad():
            indices = self.first.indices(batch.input)
            output = torch.sigmoid(self.first.decode(self.first.lookup(indices)))
        nll = self.index_nll(indices).mean()
        return LossTerms(loss=nll, output=output, terms={"nll_per_index": nll.detach() / indices[0].numel()})

    def sample_indices(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """`n` index maps drawn position by position in raster order (ancestral sampling)."""
        return sample_raster(self.net, n, self.first.map_shape, generator)

    def prior_codes(self, n: int, generator: torch.Generator | None = None,
                    labels: torch.Tensor | None = None) -> torch.Tensor:
        """Flat quantised maps (the first stage's codes) of `n` sampled index maps."""
        return self.first.lookup(self.sample_indices(n, generator)).flatten(1)

    def uniform_nll(self) -> float:
        """The NLL per image of a prior that knows nothing: positions x log(codebook_size)."""
        return math.prod(self.first.map_shape) * math.log(self.first.codebook_size)
