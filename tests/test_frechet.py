"""Exact Fréchet distance: agreement with torch-fidelity and a scipy ``sqrtm`` reference, zero, symmetry, forms."""
import numpy as np
import pytest
import scipy.linalg
import torch
from threadpoolctl import threadpool_limits
from torch_fidelity.metric_fid import fid_statistics_to_metric, KEY_METRIC_FID

from imbgan_core.metrics.frechet import (GaussianStats, frechet_distance, frechet_distance_from_features,
                                         frechet_distance_stats)

SHAPES = [(50, 2048), (500, 2048), (5000, 64)]
# scipy's 2048 x 2048 sqrtm takes 15-60 s on 2 cores, beyond this file's test-time share; torch-fidelity (a
# non-symmetric eigendecomposition, an independent route) covers d = 2048, and sqrtm covers the n >= d case here
# and the low-rank and mixed forms in test_all_forms_agree_for_mixed_sample_sizes.
SCIPY_SHAPES = {(5000, 64)}


def _feature_pair(n, d, seed=0):
    """Two feature sets from different Gaussians (shifted mean, mixed scales) so the FID is far from zero."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, d))
    mix = np.eye(d) + 0.3 * rng.standard_normal((d, d)) / np.sqrt(d)
    b = rng.standard_normal((n, d)) @ mix * 1.3 + 0.2
    return a, b


def _scipy_reference(mu1, s1, mu2, s2):
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean).real)


@pytest.fixture(scope="module", autouse=True)
def single_blas_thread():
    """numpy's BLAS (torch-fidelity, scipy) on one thread like torch in conftest: no oversubscription on 2 cores."""
    with threadpool_limits(1):
        yield


@pytest.mark.slow
@pytest.mark.parametrize("n,d", SHAPES)
def test_agrees_with_torch_fidelity_and_scipy(n, d):
    a, b = _feature_pair(n, d)
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    fidelity = fid_statistics_to_metric({"mu": mu1, "sigma": s1}, {"mu": mu2, "sigma": s2}, verbose=False)
    fidelity = fidelity[KEY_METRIC_FID]
    references = [fidelity]
    if (n, d) in SCIPY_SHAPES:
        references.append(_scipy_reference(mu1, s1, mu2, s2))

    values = [frechet_distance_from_features(a, b)]  # low-rank when n < d, eigen form otherwise
    if n >= 500:  # the eigen form from moments (2 x 2048^3 work): once at d = 2048 is enough
        values.append(frechet_distance(mu1, s1, mu2, s2))
    for value in values:
        for reference in references:
            assert value == pytest.approx(reference, rel=1e-6)


def test_identical_inputs_give_zero():
    a, _ = _feature_pair(40, 128)
    assert frechet_distance_from_features(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a.mean(0), np.cov(a, rowvar=False), a.mean(0), np.cov(a, rowvar=False)) == \
        pytest.approx(0.0, abs=1e-8)
    big, _ = _feature_pair(300, 32)
    assert frechet_distance_from_features(torch.from_numpy(big), big) == pytest.approx(0.0, abs=1e-9)


def test_symmetry():
    a, b = _feature_pair(60, 128, seed=1)
    assert frechet_distance_from_features(a, b) == pytest.approx(frechet_distance_from_features(b, a), rel=1e-12)
    a, b = _feature_pair(400, 32, seed=2)
    assert frechet_distance_from_features(a, b) == pytest.approx(frechet_distance_from_features(b, a), rel=1e-12)


def test_all_forms_agree_for_mixed_sample_sizes():
    """Low-rank (both n < d), mixed (one side a covariance) and eigen forms give the same value.

    Tolerance 1e-7: the references (sqrtm, eigen form) of a rank-deficient product carry √(rounding) per zero
    eigenvalue, ~1e-8 relative here; the low-rank forms have no such term.
    """
    rng = np.random.default_rng(3)
    d = 96
    small = rng.standard_normal((40, d)) * 0.7 + 0.1
    large = rng.standard_normal((500, d))
    reference = _scipy_reference(small.mean(0), np.cov(small, rowvar=False), large.mean(0), np.cov(large, rowvar=False))
    mixed = frechet_distance_stats(GaussianStats.from_features(small), GaussianStats.from_features(large))
    assert GaussianStats.from_features(small).centred is not None  # the mixed path really ran
    assert mixed == pytest.approx(reference, rel=1e-7)
    stats_small = GaussianStats.from_moments(small.mean(0), np.cov(small, rowvar=False))
    eigen = frechet_distance_stats(stats_small, GaussianStats.from_features(large))
    assert eigen == pytest.approx(reference, rel=1e-7)
    other_small = rng.standard_normal((30, d))
    low_rank = frechet_distance_from_features(small, other_small)
    assert low_rank == pytest.approx(_scipy_reference(small.mean(0), np.cov(small, rowvar=False),
                                                      other_small.mean(0), np.cov(other_small, rowvar=False)),
                                     rel=1e-7)


def test_state_round_trip_keeps_the_value():
    a, b = _feature_pair(200, 16, seed=4)
    stats = GaussianStats.from_features(a)
    stats.root()
    restored = GaussianStats.from_state(stats.state())
    assert frechet_distance_stats(restored, GaussianStats.from_features(b)) == \
        pytest.approx(frechet_distance_from_features(a, b), rel=1e-12)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="features_a"):
        frechet_distance_from_features(np.zeros(5), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance_from_features(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="dimensions differ"):
        frechet_distance_from_features(np.ones((5, 2)), np.ones((5, 3)))
    with pytest.raises(ValueError, match="sigma"):
        frechet_distance(np.zeros(3), np.eye(2), np.zeros(3), np.eye(3))
