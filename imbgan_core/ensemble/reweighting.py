"""Real-sample reweighting for the next ensemble member (Slim 2020, Sec. 5.1, Algorithm 1).

Each real image r of class k gets the summed feature distance to the previous generators' samples of class k,
normalised within the class; a transform ``f`` (A_mu, A_sigma, B, C) turns these into weights that the next
member's data sampler uses as sampling probabilities (Sec. 5.2: "sampling probabilities rather than loss weights").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


TRANSFORMS = ("A_mu", "A_sigma", "B", "C")  # Algorithm 1's transforms; ensemble.reweighting also takes "none"


@dataclass
class ClassWeightStats:
    """Per-class statistics of Algorithm 1 (saved beside every member): mu_k, sigma_k, share of zeroed samples."""

    count: int
    mu: float
    sigma: float
    zero_share: float

    def to_dict(self) -> dict:
        return {"count": self.count, "mu": self.mu, "sigma": self.sigma, "zero_share": self.zero_share}


@dataclass
class Reweighting:
    """Algorithm 1's output: normalised weights ``raw``, transformed ``weights``, and per-class stats."""

    raw: torch.Tensor
    weights: torch.Tensor
    stats: list[ClassWeightStats]


def summed_distances(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    """d_k(r) = sum over generated g of ||phi(r) - phi(g)||_2 (Algorithm 1, inner loop), in float64."""
    return torch.cdist(real_features.double(), fake_features.double()).sum(dim=1)


def normalise_within_class(d: torch.Tensor) -> torch.Tensor:
    """w = (d - d_min) / d_max over the class's real samples (Algorithm 1, as written).

    The paper divides by d_max, not d_max - d_min, so weights lie in [0, 1 - d_min/d_max]; we follow it (the
    transforms below only use w relative to mu_k, sigma_k, and sampling probabilities are renormalised anyway).
    Its d_min/d_max are written over D_G,k, where d_k is not defined; they are taken over the real samples D_R,k.
    Guard: d_max = 0 (all features coincide) gives all-zero weights instead of 0/0.
    """
    d_max = d.max()
    if d_max <= 0:
        return torch.zeros_like(d)
    return (d - d.min()) / d_max


def transform(w: torch.Tensor, mu: float, sigma: float, method: str) -> torch.Tensor:
    """The weight transform f(w; mu_k, sigma_k) of Sec. 5.1 (Methods A_mu, A_sigma, B, C).

    Guard for B with sigma_k = 0: every weight of the class then equals mu_k, and the sigmoid of 0/0 is taken
    as its limit along w = mu_k, i.e. 0.5 for every sample (the class stays uniformly sampled).
    """
    if method == "A_mu":
        return torch.where(w < mu, torch.zeros_like(w), w)
    if method == "A_sigma":
        return torch.where(w < mu - sigma, torch.zeros_like(w), w)
    if method == "B":
        if sigma == 0.0:
            return torch.full_like(w, 0.5)
        return torch.sigmoid(2.0 * (w - mu) / sigma)
    if method == "C":
        return w.clone()
    raise ValueError(f"ensemble.reweighting: unknown transform {method!r} (valid: {', '.join(TRANSFORMS)})")


def algorithm1(real_features: torch.Tensor, real_labels: torch.Tensor, fake_features: torch.Tensor,
               fake_labels: torch.Tensor, num_classes: int, method: str) -> Reweighting:
    """Algorithm 1 of Slim 2020: per-class summed distances, within-class normalisation, then ``method``.

    mu_k and sigma_k are the mean and population standard deviation (ddof 0; the paper does not say) of the
    class's normalised weights. Classes without generated samples keep weight 1 for every real sample.
    """
    if method not in TRANSFORMS:
        raise ValueError(f"ensemble.reweighting: {method!r} has no weights (valid: {', '.join(TRANSFORMS)})")
    if real_features.shape[0] != real_labels.shape[0] or fake_features.shape[0] != fake_labels.shape[0]:
        raise ValueError("algorithm1: features and labels differ in length "
                         f"(real {real_features.shape[0]} vs {real_labels.shape[0]}, "
                         f"fake {fake_features.shape[0]} vs {fake_labels.shape[0]})")
    raw = torch.ones(real_labels.shape[0], dtype=torch.float64)
    weights = raw.clone()
    stats = []
    for k in range(num_classes):
        real_idx = (real_labels == k).nonzero().flatten()
        fake_k = fake_features[fake_labels == k]
        if real_idx.numel() == 0 or fake_k.shape[0] == 0:
            stats.append(ClassWeightStats(int(real_idx.numel()), 1.0, 0.0, 0.0))
            continue
        w = normalise_within_class(summed_distances(real_features[real_idx], fake_k))
        mu, sigma = float(w.mean()), float(w.std(unbiased=False))
        f_w = transform(w, mu, sigma, method)
        raw[real_idx], weights[real_idx] = w, f_w
        stats.append(ClassWeightStats(int(real_idx.numel()), mu, sigma, float((f_w == 0).double().mean())))
    return Reweighting(raw=raw, weights=weights, stats=stats)


def sampling_probabilities(weights: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-sample probabilities: class shares as in the training split, the weights only act within a class.

    The paper normalises "within each class and not globally to ensure class balancing" (Sec. 5.1); we keep each
    class's total probability at n_k / N so the next member sees the same long-tailed class profile (its method,
    e.g. CBGAN, still targets the same imbalance), and redistribute it inside the class in proportion to the
    weights. A class whose weights are all zero (e.g. a single image: d - d_min = 0) falls back to uniform.
    """
    weights = weights.double()
    if (weights < 0).any() or not torch.isfinite(weights).all():
        raise ValueError("sampling_probabilities: weights must be finite and >= 0")
    probs = torch.zeros_like(weights)
    total = labels.shape[0]
    for k in range(num_classes):
        idx = (labels == k).nonzero().flatten()
        if idx.numel() == 0:
            continue
        w = weights[idx]
        w = w / w.sum() if w.sum() > 0 else torch.full_like(w, 1.0 / idx.numel())
        probs[idx] = w * (idx.numel() / total)
    return probs
