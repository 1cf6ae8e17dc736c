"""Softlabel-GAN profiles under the per-class cap: counts add up to the requested total exactly (issue 14 item 4)."""
from __future__ import annotations

import numpy as np
import pytest

from imbgan_core.config import ImbalanceConfig
from imbgan_core.data.longtail import capped_shares, class_counts, softlabel_counts


def test_pareto_tiny_imagenet_sums_to_the_paper_total_under_the_cap():
    """Before: the cap at 500 dropped the surplus (35,977 of 47,602). Now the surplus goes to the other classes."""
    counts = class_counts(ImbalanceConfig(profile="pareto", total=47602), 200, 500)
    assert sum(counts) == 47602
    assert max(counts) == 500 and min(counts) == 40
    assert sum(c == 500 for c in counts) == 48


@pytest.mark.parametrize("profile, classes, n_max, total, low, high", [
    ("lognormal", 10, 5000, 3208, 66, 1717),  # imbalanced CIFAR-10 (paper: 65-1720)
    ("chi2", 100, 500, 2993, 7, 36),  # imbalanced CIFAR-100 (paper: 6-36)
])
def test_paper_profiles_where_the_cap_does_not_bind(profile, classes, n_max, total, low, high):
    counts = class_counts(ImbalanceConfig(profile=profile, total=total), classes, n_max)
    assert sum(counts) == total and (min(counts), max(counts)) == (low, high)


@pytest.mark.parametrize("profile, classes, n_max, expected", [
    ("lognormal", 10, 5000, 12500),  # CIFAR-10 default: head class at the 5,000 cap (the paper's set: 3,208)
    ("chi2", 100, 500, 12500),
    ("pareto", 200, 500, 25000),
])
def test_default_total_is_a_quarter_of_the_balanced_pool(profile, classes, n_max, expected):
    counts = class_counts(ImbalanceConfig(profile=profile), classes, n_max)
    assert sum(counts) == expected == n_max * classes // 4 and max(counts) <= n_max


@pytest.mark.parametrize("profile", ["lognormal", "chi2", "pareto"])
@pytest.mark.parametrize("classes, n_max", [(10, 60), (10, 5000), (100, 500), (200, 500)])
def test_counts_sum_to_any_feasible_total(profile, classes, n_max):
    """Raw counts (class_counts then rejects a total small enough to leave a class empty)."""
    for total in np.linspace(classes, n_max * classes, 7).astype(int):
        counts = softlabel_counts(profile, classes, int(total), n_max, seed=3)
        assert sum(counts) == total and max(counts) <= n_max and min(counts) >= 0


def test_total_equal_to_the_pool_is_balanced_and_above_it_is_an_error():
    assert class_counts(ImbalanceConfig(profile="pareto", total=2000), 200, 10) == [10] * 200
    with pytest.raises(ValueError, match=r"dataset.imbalance.total: 2001 images exceed"):
        class_counts(ImbalanceConfig(profile="pareto", total=2001), 200, 10)


def test_capped_shares_redistribute_in_proportion():
    shares = capped_shares(np.array([8.0, 1.0, 1.0]), 12, 5)  # 9.6 -> 5; the other two share 7 equally
    assert shares.tolist() == pytest.approx([5.0, 3.5, 3.5])
    shares = capped_shares(np.array([6.0, 3.0, 1.0]), 13, 5)  # 7.8 -> 5, then 6 -> 5, the rest gets 3
    assert shares.tolist() == pytest.approx([5.0, 5.0, 3.0])
