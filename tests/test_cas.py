"""Classification Accuracy Score: real images through the generator path score well above chance, noise scores at
chance, filtering keeps only confident samples of the asked class, truncation reaches the generator."""
import pytest
import torch

from imbgan_core.config import CASConfig
from imbgan_core.metrics.cas import GeneratedBatches, classification_accuracy_score
from imbgan_core.training import truncated_normal

SMALL = dict(steps=80, batch_size=32)


def real_generator(pool):
    """A 'generator' that returns held-out real images of the asked classes (digits pool), as uint8."""
    by_class = [pool.images[pool.labels == k] for k in range(pool.num_classes)]
    gen = torch.Generator().manual_seed(1)

    def generate(labels, **kwargs):
        picks = [by_class[k][torch.randint(0, len(by_class[k]), (1,), generator=gen)] for k in labels.tolist()]
        return torch.cat(picks)

    return generate


def passes_filter(classifier, x, y, p_t=0.9):
    probs = torch.softmax(classifier(x), dim=1)
    return (probs.argmax(1) == y) & (probs.gather(1, y.view(-1, 1)).squeeze(1) >= p_t)


def noise_generator(labels, **kwargs):
    return torch.rand(len(labels), 1, 16, 16) * 2 - 1


@pytest.fixture(scope="module")
def real_score(digits_data, cache_dir):
    return classification_accuracy_score(real_generator(digits_data.pool), digits_data, CASConfig(**SMALL),
                                         cache_dir=cache_dir)


def test_real_images_through_the_generator_path_score_well(real_score):
    assert real_score["cas"] > 0.7  # chance is 0.1
    assert real_score["cas_real"] > 0.7  # the reference: same classifier and budget on the long-tailed split


def test_noise_generator_scores_near_chance(digits_data, real_score, cache_dir):
    score = classification_accuracy_score(noise_generator, digits_data, CASConfig(**SMALL), cache_dir=cache_dir)
    assert score["cas"] < 0.2
    assert score["cas_real"] == real_score["cas_real"]  # the reference is cached, not retrained


def test_filtering_keeps_confident_samples_of_the_asked_class(digits_data, annotator):
    real = real_generator(digits_data.pool)

    def half_noise(labels, **kwargs):  # even positions real, odd positions noise
        out = real(labels).float().div(127.5).sub(1.0)
        out[1::2] = noise_generator(labels[1::2])
        return out

    cfg = CASConfig(filter_threshold=0.9, **SMALL)
    x, y = GeneratedBatches(half_noise, 10, cfg, annotator)(torch.Generator().manual_seed(0))
    assert len(y) == cfg.batch_size
    assert passes_filter(annotator, x, y).all()
    x_all, y_all = GeneratedBatches(half_noise, 10, CASConfig(**SMALL))(torch.Generator().manual_seed(0))
    assert passes_filter(annotator, x_all, y_all).double().mean() < 0.8  # without the filter, noise gets through
    with pytest.raises(ValueError, match="filter_threshold"):
        classification_accuracy_score(half_noise, digits_data, cfg)


def test_batches_are_class_balanced_and_truncation_is_passed_on():
    seen = {}

    def generate(labels, **kwargs):
        seen.update(kwargs)
        return noise_generator(labels)

    x, y = GeneratedBatches(generate, 10, CASConfig(truncation=1.5, **SMALL))(torch.Generator().manual_seed(0))
    assert seen == {"truncation": 1.5}
    assert sorted(torch.bincount(y, minlength=10).tolist()) == [3] * 8 + [4] * 2


def test_truncated_latents_stay_within_psi():
    gen = torch.Generator().manual_seed(0)
    z = truncated_normal((2000, 8), 0.5, gen)
    assert float(z.abs().max()) <= 0.5 and float(z.std()) > 0.2
    assert torch.equal(truncated_normal((3, 4), None, torch.Generator().manual_seed(1)),
                       torch.randn((3, 4), generator=torch.Generator().manual_seed(1)))
