"""DiffAugment (Zhao et al. 2020) with the ranges of Softlabel-GAN Sec. 4.3 / docs/reference.md#diffaugment, on real
and fake alike.

color: brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5); translation within ±1/8 of the
size (zero padding); cutout of a square half the image size. All randomness comes from an explicit
``torch.Generator`` (on the CPU) so that a checkpoint can restore the augmentation stream exactly.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

TRANSLATION_RATIO = 1 / 8  # Softlabel-GAN Sec. 4.3: within [-1/8, 1/8] of the image size
CUTOUT_RATIO = 1 / 2  # Softlabel-GAN Sec. 4.3: a random square of half the image size


def _uniform(x: torch.Tensor, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    """One U(low, high) draw per image, shaped to broadcast over C x H x W."""
    u = torch.rand(x.shape[0], 1, 1, 1, generator=gen).to(device=x.device, dtype=x.dtype)
    return low + (high - low) * u


def brightness(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return x + _uniform(x, -0.5, 0.5, gen)


def saturation(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=1, keepdim=True)
    return (x - mean) * _uniform(x, 0.0, 2.0, gen) + mean


def contrast(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(x, 0.5, 1.5, gen) + mean


def translation(x: torch.Tensor, gen: torch.Generator, ratio: float = TRANSLATION_RATIO) -> torch.Tensor:
    """Shift each image by an integer offset in [-round(ratio*size), +round(ratio*size)], filling with zeros."""
    n, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sh, sh + 1, (n, 1, 1), generator=gen).to(x.device)
    dx = torch.randint(-sw, sw + 1, (n, 1, 1), generator=gen).to(x.device)
    rows = (torch.arange(h, device=x.device).view(1, h, 1) + dy + sh).expand(n, h, w)
    cols = (torch.arange(w, device=x.device).view(1, 1, w) + dx + sw).expand(n, h, w)
    padded = F.pad(x, [sw, sw, sh, sh])
    flat = padded.flatten(2)
    index = (rows * (w + 2 * sw) + cols).flatten(1).unsqueeze(1).expand(-1, x.shape[1], -1)
    return flat.gather(2, index).view_as(x)


def cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = CUTOUT_RATIO) -> torch.Tensor:
    """Zero a square of ratio * size per side centred at a uniform position (clipped at the border)."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=gen).to(x.device)
    cx = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=gen).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = ((rows >= cy - ch // 2) & (rows < cy - ch // 2 + ch)
              & (cols >= cx - cw // 2) & (cols < cx - cw // 2 + cw))
    return x * (~inside).unsqueeze(1).to(x.dtype)


POLICIES: dict[str, tuple[Callable, ...]] = {
    "color": (brightness, saturation, contrast),
    "translation": (translation,),
    "cutout": (cutout,),
}


def parse_policy(policy: str) -> list[str]:
    """'color,translation,cutout' -> names; '' -> []. Unknown names raise a ValueError naming the key."""
    names = [p.strip() for p in policy.split(",") if p.strip()]
    unknown = [p for p in names if p not in POLICIES]
    if unknown:
        raise ValueError(f"train.diffaugment: unknown policy {', '.join(map(repr, unknown))} "
                         f"(valid: {', '.join(POLICIES)})")
    return names


class DiffAugment:
    """Differentiable augmentation applied identically (in distribution) to real and fake batches before D."""

    def __init__(self, policy: str):
        self.names = parse_policy(policy)

    def __call__(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        for name in self.names:
            for fn in POLICIES[name]:
                x = fn(x, gen)
        return x.contiguous()
