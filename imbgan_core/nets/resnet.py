"""SNResGAN (Miyato et al. 2018; Gulrajani et al. 2017 blocks), CBGAN appendix Tables 8-9.

Up to 32 px: Miyato's 32x32 model — G: 4x4x256 and one up-block of 256 channels per doubling; D: an optimized
first block of 128 channels, one more down-block and two plain blocks. From 64 px: Tables 8-9 — G widths
1024-512-256-128-64 (capped at 1024 above 64 px), D down-blocks 64-128-256-512 then a plain 1024 block.
The blocks are shared with the BigGAN backbone (``biggan.py``), which only changes the conditioning.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionalBatchNorm2d, ProjectionHead, maybe_sn, num_upsamplings, scaled


class GenBlock(nn.Module):
    """GEN_BLOCK: BN, ReLU, up x2, conv3, BN, ReLU, conv3, plus a learned 1x1 shortcut of the upsampled input."""

    def __init__(self, c_in: int, c_out: int, norm: Callable[[int], nn.Module], use_sn: bool = False):
        super().__init__()
        self.norm1, self.norm2 = norm(c_in), norm(c_out)
        self.conv1 = maybe_sn(nn.Conv2d(c_in, c_out, 3, 1, 1), use_sn)
        self.conv2 = maybe_sn(nn.Conv2d(c_out, c_out, 3, 1, 1), use_sn)
        self.shortcut = maybe_sn(nn.Conv2d(c_in, c_out, 1), use_sn)

    def forward(self, x: torch.Tensor, cond) -> torch.Tensor:
        h = F.interpolate(F.relu(self.norm1(x, cond)), scale_factor=2)
        h = self.conv2(F.relu(self.norm2(self.conv1(h), cond)))
        return h + self.shortcut(F.interpolate(x, scale_factor=2))


class DisBlock(nn.Module):
    """DIS_BLOCK: (ReLU,) conv3, ReLU, conv3, (avg-pool) plus a 1x1 shortcut; ``first`` is Miyato's optimized
    block that does not start with a ReLU on the image."""

    def __init__(self, c_in: int, c_out: int, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.conv1 = maybe_sn(nn.Conv2d(c_in, c_out, 3, 1, 1), True)
        self.conv2 = maybe_sn(nn.Conv2d(c_out, c_out, 3, 1, 1), True)
        self.shortcut = maybe_sn(nn.Conv2d(c_in, c_out, 1), True) if (down or c_in != c_out) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(x if self.first else F.relu(x))
        h = self.conv2(F.relu(h))
        if self.down:
            h = F.avg_pool2d(h, 2)
        if self.shortcut is None:
            return h + x
        if self.first:  # optimized block: pool before the 1x1 conv
            return h + self.shortcut(F.avg_pool2d(x, 2))
        sc = self.shortcut(x)
        return h + (F.avg_pool2d(sc, 2) if self.down else sc)


def generator_widths(resolution: int, width: float) -> list[int]:
    """Channels at 4x4 and after each up-block (see the module docstring)."""
    n_up = num_upsamplings(resolution)
    if resolution <= 32:
        return [scaled(256, width)] * (n_up + 1)
    return [scaled(min(1024, 64 * 2 ** (n_up - i)), width) for i in range(n_up + 1)]


def discriminator_plan(resolution: int, width: float) -> list[tuple[int, int, bool]]:
    """(c_in, c_out, downsample) per block after the image channels (see the module docstring)."""
    if resolution <= 32:
        c = scaled(128, width)
        return [(c, c, True), (c, c, False), (c, c, False)]
    n_down = num_upsamplings(resolution)
    widths = [scaled(min(1024, 64 * 2**i), width) for i in range(n_down)]
    plan = [(c_in, c_out, True) for c_in, c_out in zip(widths, widths[1:])]
    return plan + [(widths[-1], scaled(min(1024, 64 * 2**n_down), width), False)]


class Generator(nn.Module):
    """Table 8 / Miyato 32x32: FC -> 4x4 -> GEN_BLOCKs -> BN, ReLU, conv3 -> tanh; cBN when conditional."""

    def __init__(self, z_dim: int, num_classes: int, resolution: int, channels: int, width: float = 1.0):
        super().__init__()
        widths = generator_widths(resolution, width)
        self.z_dim, self.base = z_dim, widths[0]
        self.fc = nn.Linear(z_dim, 4 * 4 * widths[0])
        norm = lambda c: ConditionalBatchNorm2d(c, num_classes)  # noqa: E731
        self.blocks = nn.ModuleList(GenBlock(a, b, norm) for a, b in zip(widths, widths[1:]))
        self.out_norm = nn.BatchNorm2d(widths[-1])
        self.out = nn.Conv2d(widths[-1], channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.base, 4, 4)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.out(F.relu(self.out_norm(h))))


class Discriminator(nn.Module):
    """Table 9 / Miyato 32x32: DIS_BLOCKs -> ReLU -> global sum pool -> FC(., 1) plus the projection term."""

    def __init__(self, num_classes: int, resolution: int, channels: int, width: float = 1.0,
                 projection: str = "hard"):
        super().__init__()
        plan = discriminator_plan(resolution, width)
        self.blocks = nn.ModuleList([DisBlock(channels, plan[0][0], down=True, first=True)]
                                    + [DisBlock(a, b, down) for a, b, down in plan])
        c_last = plan[-1][1]
        self.fc = maybe_sn(nn.Linear(c_last, 1), True)
        self.head = ProjectionHead(c_last, num_classes, projection)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): ReLU then global sum pool after the last block (read by the source logit and any class head)."""
        h = x
        for block in self.blocks:
            h = block(h)
        return F.relu(h).sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x)
        return self.fc(features).squeeze(1) + self.head(features, y)
