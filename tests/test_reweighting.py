"""Algorithm 1 (Slim 2020) on hand-made features: distances, within-class normalisation, every transform."""
import math

import pytest
import torch

from imbgan_core.ensemble.reweighting import (
    algorithm1, normalise_within_class, sampling_probabilities, summed_distances, transform,
)

# Class 0 (2-D, a 3-4-5 triangle): reals (0,0), (3,4); one fake at (0,0) -> d = [0, 5] -> w = [0, 1].
# Class 1 (1-D): reals 2, 4, 5, 10; fakes 1, 3 -> d = [2, 4, 6, 16] -> w = (d - 2) / 16.
# Class 2 (1-D): reals 1, 2, 10 x5; fake 0 -> d = [1, 2, 10 x5] -> w = (d - 1) / 10 = [0, .1, .9 x5].
REAL = torch.tensor([[0.0, 0], [3, 4], [2, 0], [4, 0], [5, 0], [10, 0], [1, 0], [2, 0]] + [[10.0, 0]] * 5)
REAL_Y = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2] + [2] * 5)
FAKE = torch.tensor([[0.0, 0], [1, 0], [3, 0], [0, 0]])
FAKE_Y = torch.tensor([0, 1, 1, 2])
W_RAW = {0: [0.0, 1.0], 1: [0.0, 0.125, 0.25, 0.875], 2: [0.0, 0.1] + [0.9] * 5}


def mean_std(values):
    mu = sum(values) / len(values)
    return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / len(values))


def class_slice(k):
    return (REAL_Y == k).nonzero().flatten()


def test_summed_distances_are_euclidean_sums():
    d = summed_distances(REAL[class_slice(1)], FAKE[FAKE_Y == 1])
    assert d.tolist() == pytest.approx([2.0, 4.0, 6.0, 16.0])
    assert summed_distances(REAL[:2], FAKE[:1]).tolist() == pytest.approx([0.0, 5.0])


def test_normalisation_subtracts_min_and_divides_by_max():
    assert normalise_within_class(torch.tensor([2.0, 4.0, 6.0, 16.0])).tolist() == pytest.approx(W_RAW[1])
    assert normalise_within_class(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_raw_weights_and_class_stats(k):
    result = algorithm1(REAL, REAL_Y, FAKE, FAKE_Y, num_classes=3, method="C")
    assert result.raw[class_slice(k)].tolist() == pytest.approx(W_RAW[k])
    mu, sigma = mean_std(W_RAW[k])
    assert result.stats[k].mu == pytest.approx(mu)
    assert result.stats[k].sigma == pytest.approx(sigma)
    assert result.stats[k].count == len(W_RAW[k])


def test_a_mu_zeroes_exactly_the_below_mean_weights():
    result = algorithm1(REAL, REAL_Y, FAKE, FAKE_Y, num_classes=3, method="A_mu")
    # class 1: mu = 0.3125 -> only 0.875 survives; class 2: mu = 4.6/7 ~ 0.657 -> the five 0.9 survive
    assert result.weights[class_slice(1)].tolist() == pytest.approx([0.0, 0.0, 0.0, 0.875])
    assert result.weights[class_slice(2)].tolist() == pytest.approx([0.0, 0.0] + [0.9] * 5)
    assert result.stats[1].zero_share == pytest.approx(0.75)
    assert result.stats[2].zero_share == pytest.approx(2 / 7)


def test_a_sigma_threshold_is_mean_minus_std():
    result = algorithm1(REAL, REAL_Y, FAKE, FAKE_Y, num_classes=3, method="A_sigma")
    # class 1: mu - sigma < 0 -> nothing changes; class 2: mu - sigma ~ 0.31 -> 0.1 is zeroed too
    assert result.weights[class_slice(1)].tolist() == pytest.approx(W_RAW[1])
    assert result.weights[class_slice(2)].tolist() == pytest.approx([0.0, 0.0] + [0.9] * 5)
    mu, sigma = mean_std(W_RAW[2])
    assert 0.1 < mu - sigma < 0.9


def test_b_is_the_papers_sigmoid():
    result = algorithm1(REAL, REAL_Y, FAKE, FAKE_Y, num_classes=3, method="B")
    for k in range(3):
        mu, sigma = mean_std(W_RAW[k])
        expected = [1.0 / (1.0 + math.exp(-2.0 * (w - mu) / sigma)) for w in W_RAW[k]]
        assert result.weights[class_slice(k)].tolist() == pytest.approx(expected)
    # class 0: w = [0, 1], mu = 0.5, sigma = 0.5 -> sigmoid(-2), sigmoid(2)
    assert result.weights[:2].tolist() == pytest.approx([0.11920292202, 0.88079707797])


def test_c_is_the_identity():
    result = algorithm1(REAL, REAL_Y, FAKE, FAKE_Y, num_classes=3, method="C")
    assert torch.equal(result.weights, result.raw)


def test_zero_sigma_guard_and_unknown_method():
    w = torch.full((4,), 0.3, dtype=torch.float64)
    assert transform(w, 0.3, 0.0, "B").tolist() == [0.5] * 4
    assert transform(w, 0.3, 0.0, "A_mu").tolist() == pytest.approx([0.3] * 4)
    with pytest.raises(ValueError, match="ensemble.reweighting.*'D'"):
        transform(w, 0.3, 0.1, "D")
    with pytest.raises(ValueError, match="'none' has no weights"):
        algorithm1(REAL, REAL_Y, FAKE, FAKE_Y, num_classes=3, method="none")


def test_class_without_fakes_keeps_unit_weights():
    result = algorithm1(REAL, REAL_Y, FAKE[:1], FAKE_Y[:1], num_classes=3, method="A_mu")
    assert result.weights[class_slice(1)].tolist() == [1.0] * 4
    assert result.weights[class_slice(0)].tolist() == pytest.approx([0.0, 1.0])


def test_probabilities_keep_class_shares_and_redistribute_within():
    weights = torch.tensor([0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 3.0])
    labels = torch.tensor([0, 0, 1, 1, 1, 1, 2, 2])
    probs = sampling_probabilities(weights, labels, 3)
    # class shares 2/8, 4/8, 2/8; class 1 is all zero -> uniform fallback; class 2 split 1:3
    assert probs.tolist() == pytest.approx([0.0, 0.25, 0.125, 0.125, 0.125, 0.125, 0.0625, 0.1875])
    assert float(probs.sum()) == pytest.approx(1.0)
    with pytest.raises(ValueError, match=">= 0"):
        sampling_probabilities(-weights, labels, 3)
