"""Pure metric math: PRDC against a brute-force reference, KID unbiasedness, class-distribution metrics, diversity."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist
from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, kid_features_to_metric

from imbgan_core.metrics import prdc as prdc_module
from imbgan_core.metrics.distribution import class_accuracy, class_kl
from imbgan_core.metrics.diversity import feature_diversity, mean_pairwise_distance
from imbgan_core.metrics.kid import kernel_inception_distance, mmd2_unbiased, within_set_term
from imbgan_core.metrics.prdc import nearest_neighbour_radii, prdc


def _brute_force_prdc(real, fake, k):
    """Naeem et al. 2020, Sec. 3, written as loops over the definitions."""
    d_rr, d_ff, d_rf = cdist(real, real), cdist(fake, fake), cdist(real, fake)
    real_radius = [sorted(d_rr[i, j] for j in range(len(real)) if j != i)[k - 1] for i in range(len(real))]
    fake_radius = [sorted(d_ff[i, j] for j in range(len(fake)) if j != i)[k - 1] for i in range(len(fake))]
    precision = np.mean([any(d_rf[i, f] < real_radius[i] for i in range(len(real))) for f in range(len(fake))])
    recall = np.mean([any(d_rf[i, f] < fake_radius[f] for f in range(len(fake))) for i in range(len(real))])
    density = sum(d_rf[i, f] < real_radius[i] for i in range(len(real)) for f in range(len(fake))) / (k * len(fake))
    coverage = np.mean([min(d_rf[i]) < real_radius[i] for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density, "coverage": coverage}


@pytest.mark.parametrize("k", [1, 3, 5])
def test_prdc_matches_brute_force(k, monkeypatch):
    monkeypatch.setattr(prdc_module, "CHUNK_ROWS", 16)  # several chunks on both sides
    rng = np.random.default_rng(k)
    real = rng.standard_normal((60, 6))
    fake = rng.standard_normal((45, 6)) * 1.4 + 0.5
    got = prdc(real, fake, k)
    expected = _brute_force_prdc(real, fake, k)
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name


def test_prdc_extremes_follow_the_definitions():
    rng = np.random.default_rng(0)
    real = rng.standard_normal((40, 4))
    same = prdc(real, real, 5)  # every fake sits on a real point: inside its own ball
    assert same["precision"] == 1.0 and same["coverage"] == 1.0 and same["recall"] == 1.0
    assert same["density"] >= 1.0
    far = prdc(real, real + 100.0, 5)
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}
    cached = nearest_neighbour_radii(real, 5)
    assert prdc(real, real * 1.1, 5, real_radii=cached) == prdc(real, real * 1.1, 5)
    with pytest.raises(ValueError, match="k = 5"):
        nearest_neighbour_radii(real[:5], 5)


def test_kid_is_unbiased_on_identical_distributions():
    """Mean of the estimate over many independent draws is 0 within 3 standard errors; a shift is detected."""
    generator = torch.Generator().manual_seed(0)
    same, shifted = [], []
    for _ in range(300):
        x, y = torch.randn(12, 8, generator=generator), torch.randn(15, 8, generator=generator)
        same.append(mmd2_unbiased(x, y))
        shifted.append(mmd2_unbiased(x + 0.5, y))
    same, shifted = np.array(same), np.array(shifted)
    standard_error = same.std() / math.sqrt(len(same))
    assert abs(same.mean()) < 3 * standard_error
    assert shifted.mean() > 10 * shifted.std() / math.sqrt(len(shifted))


def test_kid_matches_torch_fidelity_on_a_full_subset():
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((30, 16)), rng.standard_normal((30, 16)) + 0.3
    reference = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=1, kid_subset_size=30,
                                       verbose=False)[KEY_METRIC_KID_MEAN]  # default kernel: (x.y / d + 1) ** 3
    assert mmd2_unbiased(x, y) == pytest.approx(reference, rel=1e-10)
    full = kernel_inception_distance(x, y, subsets=1, subset_size=30)
    assert full.value == pytest.approx(reference, rel=1e-10) and full.subset_size == 30


def test_kid_regimes_and_cached_term():
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(40, 8, generator=generator), torch.randn(25, 8, generator=generator)
    small = kernel_inception_distance(x, y, subsets=10, subset_size=30)  # y has fewer than 30: one full estimate
    assert small.subset_size is None and small.subsets == 1
    assert small.value == pytest.approx(mmd2_unbiased(x, y), rel=1e-12)
    assert kernel_inception_distance(x, y, 10, 30, y_term=within_set_term(y.double())).value == \
        pytest.approx(small.value, rel=1e-12)
    subsets = kernel_inception_distance(x, y, subsets=20, subset_size=10, seed=3)
    assert subsets.subsets == 20 and subsets.subset_size == 10
    assert subsets.value == kernel_inception_distance(x, y, subsets=20, subset_size=10, seed=3).value
    assert subsets.value != kernel_inception_distance(x, y, subsets=20, subset_size=10, seed=4).value
    with pytest.raises(ValueError, match="at least 2"):
        mmd2_unbiased(x, y[:1])


def test_class_kl_zero_for_uniform_and_log_k_for_one_class():
    uniform = torch.arange(10).repeat(7)
    assert class_kl(uniform, 10) == pytest.approx(0.0, abs=1e-12)
    assert class_kl(torch.full((50,), 3), 10) == pytest.approx(math.log(10), rel=1e-12)
    half = torch.tensor([0, 1] * 20)  # two of four classes, equally: KL = log 2
    assert class_kl(half, 4) == pytest.approx(math.log(2), rel=1e-12)
    with pytest.raises(ValueError, match="num_classes"):
        class_kl(torch.tensor([5]), 3)


def test_class_accuracy_overall_and_per_class():
    labels = torch.tensor([0, 0, 1, 1, 1, 1])
    predicted = torch.tensor([0, 1, 1, 1, 0, 1])
    overall, per_class = class_accuracy(predicted, labels, 3)
    assert overall == pytest.approx(4 / 6)
    assert per_class[:2] == [0.5, 0.75] and math.isnan(per_class[2])


def test_feature_diversity_is_one_for_real_like_samples_and_zero_when_collapsed():
    rng = np.random.default_rng(5)
    features = torch.from_numpy(rng.standard_normal((60, 5)))
    labels = torch.arange(3).repeat_interleave(20)
    assert mean_pairwise_distance(features) == pytest.approx(pdist(features.numpy()).mean(), rel=1e-12)
    real_per_class = [mean_pairwise_distance(features[labels == k]) for k in range(3)]
    overall, per_class = feature_diversity(features, labels, 3, mean_pairwise_distance(features), real_per_class)
    assert overall == pytest.approx(1.0) and per_class == pytest.approx([1.0] * 3)
    collapsed = features[0].expand(60, 5).clone()
    overall, per_class = feature_diversity(collapsed, labels, 3, mean_pairwise_distance(features), real_per_class)
    assert overall == 0.0 and per_class == [0.0] * 3
