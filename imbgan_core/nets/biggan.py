"""BigGAN-style ResNet (Brock et al. 2019), the base model of Softlabel-GAN (Katsumata et al. Sec. 4.3).

Generator: a shared class embedding (128-d, docs/reference.md#softlabel-hparams) and a hierarchical latent — z is split
into one chunk for the 4x4 input plus one chunk per up-block; each block's BatchNorms are conditioned on
[shared_embedding(y), z_chunk] through linear gain/bias maps. Spectral norm in G and D, as in BigGAN.
Widths follow BigGAN's tables (64 * [16, 16, 8, 4, 2, 1] at 128 px, [16, 8, 4, 2, 1] at 64 px, 4 * 64 up to
32 px). The discriminator is the SNResGAN one (its block plan equals BigGAN's D at 64 and 128 px).
Deliberate simplifications: no self-attention block and no orthogonal regularisation (they cost CPU time and
are not part of any method compared here); chunks are near-equal (``torch.tensor_split``) rather than fixed at
20 dims so any ``model.z_dim`` works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import LinearConditionalBatchNorm2d, maybe_sn, num_upsamplings, scaled
from .resnet import Discriminator, GenBlock

SHARED_EMBEDDING_DIM = 128  # docs/reference.md#softlabel-hparams: a 128-d shared embedding

__all__ = ["Generator", "Discriminator"]


def generator_widths(resolution: int, width: float) -> list[int]:
    n_up = num_upsamplings(resolution)
    if resolution <= 32:
        return [scaled(4 * 64, width)] * (n_up + 1)
    return [scaled(64 * min(16, 2 ** (n_up - i)), width) for i in range(n_up + 1)]


class Generator(nn.Module):
    def __init__(self, z_dim: int, num_classes: int, resolution: int, channels: int, width: float = 1.0):
        super().__init__()
        widths = generator_widths(resolution, width)
        n_chunks = len(widths)
        if z_dim < n_chunks:
            raise ValueError(f"model.z_dim must be >= {n_chunks} for the hierarchical latent at {resolution} px")
        self.z_dim, self.base, self.n_chunks = z_dim, widths[0], n_chunks
        chunk_dims = [len(c) for c in torch.arange(z_dim).tensor_split(n_chunks)]
        self.shared = nn.Embedding(num_classes, SHARED_EMBEDDING_DIM) if num_classes > 0 else None
        shared_dim = SHARED_EMBEDDING_DIM if self.shared is not None else 0
        self.fc = maybe_sn(nn.Linear(chunk_dims[0], 4 * 4 * widths[0]), True)
        self.blocks = nn.ModuleList(
            GenBlock(a, b, lambda c, d=d: LinearConditionalBatchNorm2d(c, shared_dim + d), use_sn=True)
            for a, b, d in zip(widths, widths[1:], chunk_dims[1:]))
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.out = maybe_sn(nn.Conv2d(widths[-1], channels, 3, 1, 1), True)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        chunks = z.tensor_split(self.n_chunks, dim=1)
        h = self.fc(chunks[0]).view(z.shape[0], self.base, 4, 4)
        shared = self.shared(y) if self.shared is not None else None
        for block, z_i in zip(self.blocks, chunks[1:]):
            h = block(h, z_i if shared is None else torch.cat([shared, z_i], dim=1))
        return torch.tanh(self.out(F.relu(self.out_norm(h))))
