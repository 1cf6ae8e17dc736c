"""mixup — one λ ~ Beta(a, a) per batch mixes real images and their one-hot labels with a shuffled copy
(Zhang et al. 2018; Softlabel-GAN Table 4 baseline, a = 0.2 per docs/reference.md#mixup)."""
from __future__ import annotations

import torch
from scipy.special import betaincinv

from ..config import Param
from .base import Method, one_hot


def beta_sample(a: float, gen: torch.Generator) -> float:
    """λ ~ Beta(a, a) by inverting the CDF of a uniform draw from ``gen`` (keeps one checkpointed RNG stream)."""
    return float(betaincinv(a, a, torch.rand((), generator=gen, dtype=torch.float64).item()))


class Mixup(Method):
    name = "mixup"
    param_specs = {"a": Param(0.2, float, 0.0, None, low_open=True, ref="docs/reference.md#mixup, Beta(0.2, 0.2)")}
    soft_labels = True

    def real_batch(self, x, y, index, gen):
        lam = beta_sample(self.params["a"], gen)
        perm = torch.randperm(x.shape[0], generator=gen).to(x.device)
        labels = one_hot(y, self.num_classes)
        return lam * x + (1 - lam) * x[perm], lam * labels + (1 - lam) * labels[perm]
