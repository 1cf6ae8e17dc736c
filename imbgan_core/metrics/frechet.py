"""Exact Fréchet distance between Gaussians fitted to feature sets, float64, without an ε fudge.

FD = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr√(Σ₁Σ₂), with tr√(Σ₁Σ₂) = Σ √λ(Σ₁Σ₂) (docs/reference.md#fd-exact).
Which form computes tr√(Σ₁Σ₂) depends on what each side holds (``GaussianStats``):

- both sides as centred features A (n₁×d), B (n₂×d) with n < d: the nuclear norm of A Bᵀ / √((n₁−1)(n₂−1))
  (the singular values of A Bᵀ are the square roots of the non-zero eigenvalues of Σ₁Σ₂ up to that factor);
- one side centred (n < d), the other a covariance Σ: the eigenvalues of A Σ Aᵀ / (n−1), an n×n symmetric matrix
  with the same non-zero spectrum as Σ₁Σ₂;
- both covariances: the symmetric eigen form tr√(√Σ₁ Σ₂ √Σ₁), with √Σ₁ from ``eigh`` (cacheable).

All three are exact; the small forms cost O(n₁n₂d) or O(nd²) instead of a d×d matrix square root, which is what makes
intra-FID over K classes cost about one global FID. Eigenvalues below zero are rounding of exact zeros (every matrix
here is positive semi-definite) and are clamped to zero before the square root.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def as_float64(x, name: str) -> torch.Tensor:
    """A numpy array or tensor as a float64 CPU tensor (the precision every statistic here needs)."""
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: expected a numpy array or torch tensor, got {type(x).__name__}")
    return x.detach().to(device="cpu", dtype=torch.float64)


def _features_matrix(x, name: str) -> torch.Tensor:
    x = as_float64(x, name)
    if x.dim() != 2 or x.shape[0] < 2:
        raise ValueError(f"{name}: expected an n x d feature matrix with n >= 2, got shape {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or inf")
    return x


def sqrt_psd(matrix: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix via ``eigh`` (negative rounding clamped)."""
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    return (eigenvectors * eigenvalues.clamp_min(0).sqrt()) @ eigenvectors.T


def _sum_sqrt_eigenvalues(symmetric: torch.Tensor) -> float:
    return float(torch.linalg.eigvalsh(symmetric).clamp_min(0).sqrt().sum())


@dataclass
class GaussianStats:
    """Mean and second moment of one feature set, kept in the form that makes tr√(Σ₁Σ₂) cheapest.

    ``centred`` (n×d) is kept when n < d (low-rank forms), ``cov`` (d×d) otherwise; ``sqrt_cov`` is √Σ, computed
    on first use and worth caching for real statistics. ``trace`` is tr Σ.
    """

    mean: torch.Tensor
    trace: float
    n: int | None = None
    centred: torch.Tensor | None = None
    cov: torch.Tensor | None = None
    sqrt_cov: torch.Tensor | None = None

    @classmethod
    def from_features(cls, features, name: str = "features") -> "GaussianStats":
        x = _features_matrix(features, name)
        n, d = x.shape
        mean = x.mean(dim=0)
        centred = x - mean
        trace = float(centred.square().sum()) / (n - 1)
        if n < d:
            return cls(mean=mean, trace=trace, n=n, centred=centred)
        return cls(mean=mean, trace=trace, n=n, cov=centred.T @ centred / (n - 1))

    @classmethod
    def from_moments(cls, mu, sigma) -> "GaussianStats":
        mean = as_float64(mu, "mu")
        cov = as_float64(sigma, "sigma")
        if mean.dim() != 1 or cov.shape != (mean.shape[0], mean.shape[0]):
            raise ValueError(f"expected mu of shape (d,) and sigma of shape (d, d), got {tuple(mean.shape)} and "
                             f"{tuple(cov.shape)}")
        return cls(mean=mean, trace=float(torch.trace(cov)), cov=cov)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def root(self) -> torch.Tensor:
        """√Σ (computed once)."""
        if self.sqrt_cov is None:
            self.sqrt_cov = sqrt_psd(self.cov)
        return self.sqrt_cov

    def state(self) -> dict:
        """Plain tensors for ``torch.save`` (loadable with ``weights_only=True``)."""
        out = {"mean": self.mean, "trace": torch.tensor(self.trace, dtype=torch.float64)}
        for key in ("centred", "cov", "sqrt_cov"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.n is not None:
            out["n"] = torch.tensor(self.n)
        return out

    @classmethod
    def from_state(cls, state: dict) -> "GaussianStats":
        return cls(mean=state["mean"], trace=float(state["trace"]), n=int(state["n"]) if "n" in state else None,
                   centred=state.get("centred"), cov=state.get("cov"), sqrt_cov=state.get("sqrt_cov"))


def trace_sqrt_product(a: GaussianStats, b: GaussianStats) -> float:
    """tr√(Σ_a Σ_b), exact, by the cheapest form the two sides allow (see the module docstring)."""
    if a.centred is not None and b.centred is not None:
        scale = ((a.n - 1) * (b.n - 1)) ** 0.5
        return float(torch.linalg.svdvals(a.centred @ b.centred.T).sum()) / scale
    if b.centred is not None:
        a, b = b, a
    if a.centred is not None:
        return _sum_sqrt_eigenvalues(a.centred @ b.cov @ a.centred.T / (a.n - 1))
    if b.sqrt_cov is not None and a.sqrt_cov is None:
        a, b = b, a
    root = a.root()
    return _sum_sqrt_eigenvalues(root @ b.cov @ root)


def frechet_distance_stats(a: GaussianStats, b: GaussianStats) -> float:
    """Fréchet distance between two ``GaussianStats`` (Heusel et al. 2017, Eq. in Sec. 4;
    docs/reference.md#fd-exact)."""
    if a.dim != b.dim:
        raise ValueError(f"feature dimensions differ: {a.dim} vs {b.dim}")
    value = float((a.mean - b.mean).square().sum()) + a.trace + b.trace - 2.0 * trace_sqrt_product(a, b)
    return max(value, 0.0)  # a squared distance; a tiny negative value is rounding of an exact zero


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance from means and covariances (symmetric eigen form; numpy arrays or tensors)."""
    return frechet_distance_stats(GaussianStats.from_moments(mu1, sigma1), GaussianStats.from_moments(mu2, sigma2))


def frechet_distance_from_features(features_a, features_b) -> float:
    """Fréchet distance between two n×d feature sets (low-rank form when n < d, else the symmetric eigen form)."""
    return frechet_distance_stats(GaussianStats.from_features(features_a, "features_a"),
                                  GaussianStats.from_features(features_b, "features_b"))
