"""oversample — real images drawn with per-class weight ∝ count^(−power); power 1 = class-balanced sampling
(Softlabel-GAN Table 4 baseline; docs/reference.md#oversample)."""
from __future__ import annotations

from ..config import Param
from .base import Method


class Oversample(Method):
    name = "oversample"
    param_specs = {"power": Param(1.0, float, 0.0, 1.0, ref="docs/reference.md#oversample, count^-power")}

    def class_weights(self, counts: list[int]) -> list[float]:
        return [float(c) ** -self.params["power"] if c > 0 else 0.0 for c in counts]
