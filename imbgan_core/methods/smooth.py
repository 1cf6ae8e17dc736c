"""smooth — Smooth-GAN: real labels (1 − α)·onehot + α/K (Softlabel-GAN Sec. 4.2 / 5.1, α = 0.1)."""
from __future__ import annotations

import torch

from ..config import Param
from .base import Method, one_hot


def smoothed_labels(y: torch.Tensor, num_classes: int, alpha: float) -> torch.Tensor:
    """Label smoothing T_y(y) = y(1 − α) + α/K (Softlabel-GAN Sec. 4.2)."""
    return (1 - alpha) * one_hot(y, num_classes) + alpha / num_classes


class Smooth(Method):
    name = "smooth"
    param_specs = {"alpha": Param(0.1, float, 0.0, 1.0, ref="docs/reference.md#smooth-gan, alpha = 0.1")}
    soft_labels = True

    def real_batch(self, x, y, index, gen):
        return x, smoothed_labels(y, self.num_classes, self.params["alpha"])
