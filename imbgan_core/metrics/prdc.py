"""Precision, recall, density and coverage (Naeem et al. 2020, Sec. 3; docs/reference.md#prdc), in torch.

A sample's ball has the radius of its k-th nearest neighbour within its own set (self excluded, k = 5 by default).
precision = share of fakes inside at least one real ball; recall = share of reals inside at least one fake ball;
density = mean over fakes of (number of real balls containing it) / k; coverage = share of reals whose nearest fake
lies inside their ball. Comparisons are strict (``<``) as in the authors' ``prdc`` package. Distances are computed
in row chunks so that 10k × 10k sets never materialise a full distance matrix.
"""
from __future__ import annotations

import torch

from imbgan_core.metrics.frechet import as_float64

CHUNK_ROWS = 1024


def _chunks(n: int):
    for start in range(0, n, CHUNK_ROWS):
        yield slice(start, min(start + CHUNK_ROWS, n))


def nearest_neighbour_radii(features, k: int) -> torch.Tensor:
    """Distance of every sample to its k-th nearest neighbour in the same set, self excluded (cacheable for reals)."""
    x = as_float64(features, "features")
    if x.shape[0] <= k:
        raise ValueError(f"PRDC with k = {k} needs more than {k} samples per set, got {x.shape[0]}")
    radii = torch.empty(x.shape[0], dtype=torch.float64)
    for rows in _chunks(x.shape[0]):
        distances = torch.cdist(x[rows], x)
        radii[rows] = distances.topk(k + 1, dim=1, largest=False).values[:, k]  # column 0 is the sample itself
    return radii


def prdc(real, fake, k: int, real_radii: torch.Tensor | None = None) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake`` against ``real`` features (``real_radii`` may be cached)."""
    real, fake = as_float64(real, "real"), as_float64(fake, "fake")
    if real_radii is None:
        real_radii = nearest_neighbour_radii(real, k)
    fake_radii = nearest_neighbour_radii(fake, k)
    balls_per_fake = torch.zeros(fake.shape[0], dtype=torch.float64)
    real_recalled = torch.zeros(real.shape[0], dtype=torch.bool)
    real_covered = torch.zeros(real.shape[0], dtype=torch.bool)
    for rows in _chunks(real.shape[0]):
        distances = torch.cdist(real[rows], fake)  # reals of this chunk x all fakes
        inside_real_ball = distances < real_radii[rows, None]
        balls_per_fake += inside_real_ball.sum(dim=0)
        real_recalled[rows] = (distances < fake_radii[None, :]).any(dim=1)
        real_covered[rows] = distances.min(dim=1).values < real_radii[rows]
    return {
        "precision": float((balls_per_fake > 0).double().mean()),
        "recall": float(real_recalled.double().mean()),
        "density": float(balls_per_fake.mean()) / k,
        "coverage": float(real_covered.double().mean()),
    }
