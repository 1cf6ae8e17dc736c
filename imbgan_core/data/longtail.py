"""Imbalance profiles (per-class training counts) and many / medium / few class groups. Pure and deterministic."""
from __future__ import annotations

import math

import numpy as np

from imbgan_core.config import GroupsConfig, ImbalanceConfig

# Softlabel-GAN Sec. 5.1: class frequencies are CDF increments of these scipy.stats distributions over K evenly
# spaced bins of a range: (distribution, shape parameters, low, high).
SOFTLABEL_PROFILES = {
    "lognormal": ("lognorm", {"s": 3.0}, 0.0, 3.0),  # imbalanced CIFAR-10: lognormal, sigma 3, range [0, 3)
    "chi2": ("chi2", {"df": 3}, 0.0, 3.0),  # imbalanced CIFAR-100: chi^2, 3 d.o.f., "in the same manner" -> [0, 3)
    "pareto": ("pareto", {"b": 2.0}, 1.0, 4.0),  # imbalanced Tiny ImageNet: Pareto shape 2 over [1, 4)
}

PROFILES = ("exponential", "step", *SOFTLABEL_PROFILES, "none")  # dataset.imbalance.profile

# UTLO's index boundaries (docs/reference.md#lt-groups), keyed by class count:
# CIFAR-10 / digits (10): 0-2 | 3-5 | 6-9; AnimalFaces (20): 0-4 | 5-9 | 10-19; CIFAR-100: 0-34 | 35-69 | 70-99;
# Flowers (102): 0-19 | 20-49 | 50-101.
REFERENCE_BOUNDARIES = {10: [3, 6], 20: [5, 10], 100: [35, 70], 102: [20, 50]}


def class_counts(imbalance: ImbalanceConfig, num_classes: int, n_max: int, class_names: list[str] | None = None
                 ) -> list[int]:
    """Training images per class for a profile; class 0 is the head for exponential / step.

    Raises ValueError (naming the class) when a class would get zero images: the issue asks for an error rather
    than a silent clip to one image.
    """
    if num_classes < 1 or n_max < 1:
        raise ValueError(f"need at least one class and n_max >= 1, got {num_classes} classes and n_max {n_max}")
    if imbalance.ratio < 1:
        raise ValueError(f"dataset.imbalance.ratio: must be >= 1 (rho = n_max / n_min), got {imbalance.ratio}")
    profile = imbalance.profile
    if profile == "none":
        counts = [n_max] * num_classes
    elif profile == "exponential":
        counts = exponential_counts(n_max, num_classes, imbalance.ratio)
    elif profile == "step":
        counts = step_counts(n_max, num_classes, imbalance.ratio, imbalance.minority_fraction)
    elif profile in SOFTLABEL_PROFILES:
        # Default total: a quarter of the balanced pool, n_max·K // 4 (our choice, not the paper's): CIFAR-10 lognormal
        # then has 12,500 images (head class at the 5,000 cap) where the paper's imbalanced CIFAR-10 has 3,208. For
        # the paper's sets give the total: lognormal 3208 (CIFAR-10), chi2 2993 (CIFAR-100), pareto 47602 (Tiny
        # ImageNet) (Softlabel-GAN Sec. 5.1).
        total = imbalance.total if imbalance.total is not None else n_max * num_classes // 4
        counts = softlabel_counts(profile, num_classes, total, n_max, imbalance.seed)
    else:
        raise ValueError(f"dataset.imbalance.profile: unknown profile {profile!r} "
                         f"(valid: {', '.join(PROFILES)})")
    names = class_names or [str(k) for k in range(num_classes)]
    empty = [f"{k} ({names[k]!r})" for k, n in enumerate(counts) if n < 1]
    if empty:
        raise ValueError(f"dataset.imbalance: profile {profile!r} (ratio {imbalance.ratio}, n_max {n_max}) leaves "
                         f"{'class' if len(empty) == 1 else 'classes'} {', '.join(empty)} with zero training "
                         f"images; lower the ratio or raise the total")
    return counts


def exponential_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """n_k = int(n_max * rho^(-k/(K-1))) (docs/reference.md#lt-exponential; CBGAN / LDAM CIFAR-LT)."""
    if num_classes == 1:
        return [n_max]
    return [int(n_max * ratio ** (-k / (num_classes - 1))) for k in range(num_classes)]


def step_counts(n_max: int, num_classes: int, ratio: float, minority_fraction: float) -> list[int]:
    """Step imbalance (LDAM): the last round(mu * K) classes are minority with int(n_max / rho) images."""
    n_minority = math.floor(minority_fraction * num_classes + 0.5)
    n_majority = num_classes - n_minority
    return [n_max] * n_majority + [int(n_max / ratio)] * n_minority


def softlabel_counts(profile: str, num_classes: int, total: int, n_max: int, seed: int) -> list[int]:
    """Softlabel-GAN Sec. 5.1: CDF increments over K evenly spaced bins, scaled to ``total``, classes shuffled.

    Bin i (in range order) goes to class ``permutation[i]`` of a seeded shuffle. A class cannot hold more images
    than the source has (``n_max``): shares above it are capped there and the surplus is spread over the other
    classes in proportion to their shares (repeated until no share exceeds the cap), then rounded by largest
    remainder, so the counts add up to ``total`` exactly; a ``total`` above n_max·K is an error. Where the cap
    binds, the profile is flattened at the head (a deliberate deviation: the paper describes no cap).
    Measured against Sec. 5.1 / Table 1:
    - lognormal, CIFAR-10, total 3208: 66-1717 per class (paper: 65-1720); no cap.
    - chi2, CIFAR-100, total 2993: 7-36 per class (paper: 6-36); no cap. The range is [0, 3), as in the official
      code (the paper: "in the same manner"); the official code truncates instead of rounding by largest
      remainder (docs/reference.md#lt-softlabel): truncated shares give the paper's minimum 6, but 2,944 images.
    - pareto, Tiny ImageNet, total 47602: the first bin's share (1,490 images) exceeds the 500 available; 48
      classes are capped at 500 and the rest hold 40-499 (the paper: 41-483 in Sec. 5.1, 9-586 in Table 1;
      CDF increments of Pareto(2) over [1, 4) under a 500 cap cannot give both the paper's total and its maximum).
    """
    from scipy import stats  # imported here: scipy.stats is slow to import and only these profiles need it

    if total > n_max * num_classes:
        raise ValueError(f"dataset.imbalance.total: {total} images exceed the {n_max} x {num_classes} = "
                         f"{n_max * num_classes} the source holds for profile {profile!r}")
    name, shape, low, high = SOFTLABEL_PROFILES[profile]
    edges = np.linspace(low, high, num_classes + 1)
    freq = np.diff(getattr(stats, name)(**shape).cdf(edges))
    capped = largest_remainder(capped_shares(freq, total, n_max))
    order = np.random.default_rng(seed).permutation(num_classes)
    counts = [0] * num_classes
    for bin_index, cls in enumerate(order):
        counts[int(cls)] = int(capped[bin_index])
    return counts


def capped_shares(freq: np.ndarray, total: int, cap: int) -> np.ndarray:
    """Real shares ∝ ``freq`` that sum to ``total`` with none above ``cap`` (needs total <= cap·K): classes whose
    share exceeds the cap get the cap, the rest is redistributed over the others in proportion, until none does."""
    freq = np.asarray(freq, dtype=float)
    shares = np.zeros_like(freq)
    free = np.ones(freq.shape, dtype=bool)
    while free.any():
        remaining = total - cap * int((~free).sum())
        weights = freq[free]
        proposal = remaining * weights / weights.sum() if weights.sum() > 0 else \
            np.full(weights.shape, remaining / weights.size)
        over = proposal > cap
        if not over.any():
            shares[free] = proposal
            break
        newly = np.flatnonzero(free)[over]
        shares[newly] = cap
        free[newly] = False
    return shares


def largest_remainder(shares: np.ndarray) -> np.ndarray:
    """Integers that sum to round(sum(shares)): floors, plus one for the largest fractional parts (ties: first)."""
    floors = np.floor(shares).astype(int)
    missing = int(round(float(shares.sum()))) - int(floors.sum())
    if missing > 0:
        floors[np.argsort(-(shares - floors), kind="stable")[:missing]] += 1
    return floors


def class_groups(counts: list[int], groups: GroupsConfig) -> dict[str, list[int]]:
    """Many / medium / few class indices, by rank of count (UTLO) or by count thresholds (gSR-GAN)."""
    num_classes = len(counts)
    if groups.by == "count":
        many_gt, few_le = groups.thresholds
        return {
            "many": [k for k, n in enumerate(counts) if n > many_gt],
            "medium": [k for k, n in enumerate(counts) if few_le < n <= many_gt],
            "few": [k for k, n in enumerate(counts) if n <= few_le],
        }
    b1, b2 = groups.boundaries if groups.boundaries is not None else default_boundaries(num_classes)
    ranked = sorted(range(num_classes), key=lambda k: (-counts[k], k))  # head first; ties keep class order
    return {"many": sorted(ranked[:b1]), "medium": sorted(ranked[b1:b2]), "few": sorted(ranked[b2:])}


def default_boundaries(num_classes: int) -> list[int]:
    """UTLO's boundaries (docs/reference.md#lt-groups) for the known class counts, otherwise about 30 % / 60 % of K
    (our choice, by analogy)."""
    if num_classes in REFERENCE_BOUNDARIES:
        return list(REFERENCE_BOUNDARIES[num_classes])
    return [math.floor(0.3 * num_classes + 0.5), math.floor(0.6 * num_classes + 0.5)]
