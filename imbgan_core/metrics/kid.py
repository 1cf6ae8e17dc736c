"""Kernel Inception Distance: unbiased MMD² with the cubic polynomial kernel (Bińkowski et al. 2018;
docs/reference.md#kid).

k(x, y) = (xᵀy / d + 1)³. With at least ``subset_size`` samples on both sides the estimate is the mean over
``subsets`` random subsets of ``subset_size`` per side (torch-fidelity's scheme, 100 × 1000 by default); a side with
fewer samples (a class, typically) gets one full-sample unbiased estimate instead (docs/reference.md#kid), which
needs >= 2 samples
per side. Float64 throughout; subsets are drawn from a seeded generator.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from imbgan_core.metrics.frechet import as_float64


def polynomial_kernel(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(xᵀy / d + 1)³, the KID kernel (Bińkowski et al. 2018, Sec. 3; torch-fidelity's default)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def within_set_term(x: torch.Tensor) -> float:
    """Mean of k(xᵢ, xⱼ) over i ≠ j: one side's term of the unbiased MMD², cacheable for real features."""
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"KID needs at least 2 samples per side, got {n}")
    kernel = polynomial_kernel(x, x)
    return float(kernel.sum() - kernel.diagonal().sum()) / (n * (n - 1))


def mmd2_unbiased(x, y, y_term: float | None = None) -> float:
    """Unbiased MMD² between two samples of any sizes >= 2 (Gretton et al. 2012, Eq. 3).

    ``y_term`` is ``within_set_term(y)`` when already known (cached real statistics).
    """
    x, y = as_float64(x, "x"), as_float64(y, "y")
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"expected two n x d feature matrices, got {tuple(x.shape)} and {tuple(y.shape)}")
    if y_term is None:
        y_term = within_set_term(y)
    return within_set_term(x) + y_term - 2.0 * float(polynomial_kernel(x, y).mean())


@dataclass
class KIDResult:
    """KID mean and spread over subsets, with how it was estimated (for the result's metadata)."""

    value: float
    std: float
    subsets: int
    subset_size: int | None  # None: one full-sample estimate


def kernel_inception_distance(x, y, subsets: int, subset_size: int, seed: int = 0,
                              y_term: float | None = None) -> KIDResult:
    """KID between features ``x`` (generated) and ``y`` (real); see the module docstring for the two regimes.

    ``y_term`` (the cached ``within_set_term`` of all of ``y``) is used by the full-sample estimate only.
    """
    x, y = as_float64(x, "x"), as_float64(y, "y")
    if min(len(x), len(y)) < subset_size:
        return KIDResult(mmd2_unbiased(x, y, y_term), 0.0, 1, None)
    generator = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        xs = x[torch.randperm(len(x), generator=generator)[:subset_size]]
        ys = y[torch.randperm(len(y), generator=generator)[:subset_size]]
        values.append(mmd2_unbiased(xs, ys))
    values = torch.tensor(values, dtype=torch.float64)
    return KIDResult(float(values.mean()), float(values.std(unbiased=False)), subsets, subset_size)
