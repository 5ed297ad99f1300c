"""Masked autoencoder (He et al., 2021): the image is cut into patches, most of them are hidden, a transformer encoder
reads only the visible ones and a light decoder, given mask tokens in the hidden places, predicts their pixels.

The masking happens inside the model, at every call of `loss`, drawn from torch's RNG: the training loop reseeds it
every step and validation and test from their own fixed streams, so a seeded run masks the same patches every time.
The loss is on the hidden patches only. The code for the probes is different: `embed(x)` encodes every patch of the
image (no masking) and averages the encoder's tokens.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from aelab.errors import check
from aelab.models.base import Autoencoder
from aelab.models.contract import Batch, Capabilities, LossTerms, Term
from aelab.types import Fraction, PositiveInt

RECON_MASKED = Term("recon_loss", "reconstruction loss (model.recon_loss) of the hidden patches against the clean "
                                  "target, per pixel (reduction=mean) or summed over one image's hidden pixels (sum); "
                                  "the loss, weight 1")
RECON_VISIBLE = Term("recon_visible", "the same loss on the visible patches, which the loss ignores (a diagnostic: "
                                      "how much of its input the decoder reproduces anyway)", better=None)


def sincos_positions(rows: int, cols: int, dim: int) -> torch.Tensor:
    """Fixed 2-d positional embeddings [rows * cols, dim]: half the channels encode the row, half the column, each
    as sines and cosines of geometrically spaced frequencies (raster order, as `patchify` lists the patches)."""
    quarter = dim // 4
    freq = 1.0 / (10000 ** (torch.arange(quarter, dtype=torch.float64) / max(quarter, 1)))

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angle = pos[:, None].double() * freq[None]
        return torch.cat([angle.sin(), angle.cos()], 1)

    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    table = torch.cat([encode(r.flatten()), encode(c.flatten())], 1)
    return F.pad(table, (0, dim - table.shape[1])).float()  # a dim not divisible by 4 leaves zero channels


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, H, W] -> [B, (H/p)(W/p), C p p], patches in raster order."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)


def unpatchify(patches: torch.Tensor, shape: tuple[int, int, int], p: int) -> torch.Tensor:
    c, h, w = shape
    b = len(patches)
    return patches.reshape(b, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def transformer(dim: int, depth: int, heads: int, mlp_ratio: int) -> nn.TransformerEncoder:
    """Pre-norm blocks (attention, then an MLP of mlp_ratio * dim), no dropout."""
    layer = nn.TransformerEncoderLayer(dim, heads, mlp_ratio * dim, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
    return nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)


class MaskedAutoencoder(Autoencoder):
    """Patches of `patch_size` (it must divide the image) -> linear embedding + fixed sin-cos positions -> the
    encoder (`depth` blocks of width `dim`, `heads` heads) on the visible patches -> the decoder (`decoder_depth`
    blocks of width `decoder_dim`) on visible tokens and mask tokens -> pixels of every patch.

    mask_ratio  the share of patches hidden per image (its loss is on those)

    `output`, scored by PSNR and SSIM, is the input with its hidden patches replaced by the prediction (the visible
    patches are pasted from the input, as they are: the loss never asks the decoder for them). It measures
    inpainting of mask_ratio of the image, so it does not compare with the other families' reconstructions.
    """

    terms = (RECON_MASKED, RECON_VISIBLE)
    code_pooling = "mean over patch tokens (every patch visible)"

    def __init__(self, *args, patch_size: PositiveInt = 4, mask_ratio: Fraction = 0.75, dim: PositiveInt = 128,
                 depth: PositiveInt = 4, heads: PositiveInt = 4, decoder_dim: PositiveInt = 64,
                 decoder_depth: PositiveInt = 2, decoder_heads: PositiveInt = 4, mlp_ratio: PositiveInt = 4,
                 recon_loss: Literal["bce", "mse", "l1"] = "mse", **kwargs):
        super().__init__(*args, recon_loss=recon_loss, **kwargs)
        c, h, w = self.input_shape
        check(self.input_shape == self.output_shape,
              f"model=mae predicts the patches of the image it reads, but the input is {self.input_shape} and the "
              f"target {self.output_shape}; use a corruption that keeps the image size")
        divisors = [d for d in range(1, min(h, w) + 1) if h % d == 0 and w % d == 0]
        check(h % patch_size == 0 and w % patch_size == 0,
              f"model.patch_size={patch_size} does not divide the image size {h}x{w}; use one of {divisors}")
        check(dim % heads == 0, f"model.dim={dim} is not a multiple of model.heads={heads}; use a multiple")
        check(decoder_dim % decoder_heads == 0,
              f"model.decoder_dim={decoder_dim} is not a multiple of model.decoder_heads={decoder_heads}; "
              "use a multiple")
        self.patch_size, self.mask_ratio = patch_size, float(mask_ratio)
        self.grid = (h // patch_size, w // patch_size)
        self.num_patches = self.grid[0] * self.grid[1]
        self.keep = int(self.num_patches * (1 - self.mask_ratio))
        check(1 <= self.keep < self.num_patches,
              f"model.mask_ratio={mask_ratio} leaves {self.keep} of the {self.num_patches} patches of size "
              f"{patch_size} visible; choose a ratio that hides some and leaves at least one")
        patch_pixels = c * patch_size * patch_size
        self.patch_embed = nn.Linear(patch_pixels, dim)
        self.register_buffer("pos", sincos_positions(*self.grid, dim)[None], persistent=False)
        self.register_buffer("decoder_pos", sincos_positions(*self.grid, decoder_dim)[None], persistent=False)
        self.encoder_blocks = transformer(dim, depth, heads, mlp_ratio)
        self.encoder_norm = nn.LayerNorm(dim)
        self.decoder_embed = nn.Linear(dim, decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_dim))
        nn.init.normal_(self.mask_token, std=0.02)
        self.decoder_blocks = transformer(decoder_dim, decoder_depth, decoder_heads, mlp_ratio)
        self.decoder_norm = nn.LayerNorm(decoder_dim)
        self.head = nn.Linear(decoder_dim, patch_pixels)

    @property
    def capabilities(self) -> Capabilities:
        # the decoder needs the encoder's tokens of each patch, which a pooled code no longer holds
        return dataclasses.replace(super().capabilities, decodes_codes=False, prior=None)

    # --- masking ----------------------------------------------------------------------------------------------------
    def draw_mask(self, batch_size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(order [B, L], hidden [B, L]): a random permutation of each image's patches from torch's RNG, whose first
        `keep` entries are the visible patches; hidden is 1 on the patches the encoder does not see."""
        order = torch.rand(batch_size, self.num_patches, device=device).argsort(1)
        hidden = torch.ones(batch_size, self.num_patches, device=device)
        hidden.scatter_(1, order[:, :self.keep], 0.0)
        return order, hidden

    # --- the nets ---------------------------------------------------------------------------------------------------
    def encode_tokens(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder tokens [B, n, dim] of the patches `visible` lists ([B, n] indices; None: all, in order)."""
        tokens = self.patch_embed(patchify(x, self.patch_size)) + self.pos
        if visible is not None:
            tokens = tokens.gather(1, visible[..., None].expand(-1, -1, tokens.shape[-1]))
        return self.encoder_norm(self.encoder_blocks(tokens))

    def decode_tokens(self, tokens: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
        """Pixel logits of every patch [B, L, C p p] from the visible tokens (in `order`'s first places)."""
        b = len(tokens)
        visible = self.decoder_embed(tokens)
        filled = torch.cat([visible, self.mask_token.expand(b, self.num_patches - visible.shape[1], -1)], 1)
        where = order.argsort(1)  # each patch's place in `order`
        restored = filled.gather(1, where[..., None].expand(-1, -1, filled.shape[-1])) + self.decoder_pos
        return self.head(self.decoder_norm(self.decoder_blocks(restored)))

    def encode(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The code [B, dim]: the mean of the encoder's tokens over every patch of the unmasked image."""
        return self.encode_tokens(x).mean(1)

    def predict(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(pixel logits of every patch [B, L, C p p], hidden [B, L]) for a freshly drawn mask."""
        order, hidden = self.draw_mask(len(x), x.device)
        return self.decode_tokens(self.encode_tokens(x, order[:, :self.keep]), order), hidden

    # --- the objective ----------------------------------------------------------------------------------------------
    def patch_loss(self, logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """model.recon_loss over the patches `weight` [B, L] selects: per pixel (reduction=mean) or summed per
        image (sum)."""
        if self.recon_kind == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        elif self.recon_kind == "mse":
            per_pixel = (torch.sigmoid(logits) - target).square()
        else:
            per_pixel = (torch.sigmoid(logits) - target).abs()
        selected = (per_pixel * weight[..., None]).sum()
        if self.reduction == "mean":
            return selected / (weight.sum() * per_pixel.shape[-1]).clamp_min(1)
        return selected / len(logits)

    def outputs(self, x: torch.Tensor, logits: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1]: the prediction on the hidden patches, the input on the visible ones."""
        pasted = torch.where(hidden[..., None] > 0, torch.sigmoid(logits), patchify(x, self.patch_size))
        return unpatchify(pasted, self.output_shape, self.patch_size)

    def loss(self, batch: Batch, step: int = 0) -> LossTerms:
        logits, hidden = self.predict(batch.input)
        target = patchify(batch.target, self.patch_size)
        recon = self.patch_loss(logits, target, hidden)
        with torch.no_grad():
            visible = self.patch_loss(logits.detach(), target, 1 - hidden)
        return LossTerms(loss=recon, output=self.outputs(batch.input, logits.detach(), hidden),
                         terms={"recon_loss": recon, "recon_visible": visible})

    def forward(self, x: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """The masked reconstruction (a fresh mask from torch's RNG), as `output` in `loss`."""
        logits, hidden = self.predict(x)
        return self.outputs(x, logits, hidden)

    @property
    def visible_fraction(self) -> float:
        return self.keep / self.num_patches

