"""SNDCGAN (Miyato et al. 2018) exactly as CBGAN's appendix Tables 6-7 at width 1.0 and 32x32.

Other resolutions keep the table's pattern: the last generator stage has 64 channels and each stage towards the
input doubles them (32 px: 512-256-128-64); the discriminator has stages of 64, 128, 256, ... channels, each a
stride-2 4x4 conv followed by a 3x3 conv that doubles the width (32 px: 64-128-256-512, as in Table 7).
BN is conditional BatchNorm in a conditional generator (CBGAN App. 6.4.3); LReLU slope 0.1 as in Miyato et al.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layers import ConditionalBatchNorm2d, ProjectionHead, maybe_sn, num_upsamplings, scaled

LRELU_SLOPE = 0.1  # Miyato et al. 2018, Table 3 (SNDCGAN)


class Generator(nn.Module):
    """Table 6: FC(z, 4*4*c0) -> reshape -> [TCONV(4, 2), BN, LReLU] x n -> CONV(3, 1) -> tanh."""

    def __init__(self, z_dim: int, num_classes: int, resolution: int, channels: int, width: float = 1.0):
        super().__init__()
        n_up = num_upsamplings(resolution)
        widths = [scaled(64 * 2 ** (n_up - i), width) for i in range(n_up + 1)]
        self.z_dim = z_dim
        self.base = widths[0]
        self.fc = nn.Linear(z_dim, 4 * 4 * widths[0])
        self.ups = nn.ModuleList(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1) for c_in, c_out in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(ConditionalBatchNorm2d(c, num_classes) for c in widths[1:])
        self.out = nn.Conv2d(widths[-1], channels, 3, 1, 1)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self.base, 4, 4)
        for up, norm in zip(self.ups, self.norms):
            h = F.leaky_relu(norm(up(h), y), LRELU_SLOPE)
        return torch.tanh(self.out(h))


class Discriminator(nn.Module):
    """Table 7: CONV(3, 1) -> [CONV(4, 2), CONV(3, 1)] x n, LReLU after each -> global sum pool -> FC(., 1)
    plus the projection class term."""

    def __init__(self, num_classes: int, resolution: int, channels: int, width: float = 1.0,
                 projection: str = "hard"):
        super().__init__()
        n_down = num_upsamplings(resolution)
        widths = [scaled(64 * 2**i, width) for i in range(n_down + 1)]
        layers = [maybe_sn(nn.Conv2d(channels, widths[0], 3, 1, 1), True)]
        for c_in, c_out in zip(widths, widths[1:]):
            layers += [maybe_sn(nn.Conv2d(c_in, c_in, 4, 2, 1), True), maybe_sn(nn.Conv2d(c_in, c_out, 3, 1, 1), True)]
        self.convs = nn.ModuleList(layers)
        self.fc = maybe_sn(nn.Linear(widths[-1], 1), True)
        self.head = ProjectionHead(widths[-1], num_classes, projection)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """φ(x): the globally sum-pooled features the source logit and any class head read."""
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), LRELU_SLOPE)
        return h.sum(dim=(2, 3))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        features = self.features(x)
        return self.fc(features).squeeze(1) + self.head(features, y)
