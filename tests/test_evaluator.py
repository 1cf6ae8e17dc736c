"""The evaluator on digits: real-vs-real is small, noise is large, a label-ignoring generator has low class accuracy;
real statistics are cached; every group reports exactly its record's keys; bad input is named early."""
import csv
import math

import pytest
import torch

from imbgan_core.config import CASConfig, EvalConfig
from imbgan_core.data.types import ImageDataset, LongTailData
from imbgan_core.metrics.catalog import METRICS
from imbgan_core.metrics.evaluator import EvalResult, Evaluator, real_reference
from imbgan_core.metrics.report import plot_fid_vs_class_size, write_per_class_csv
from imbgan_core.viz import to_uint8

CHEAP_GROUPS = ["fid", "intra_fid", "kid", "intra_kid", "is", "prdc", "intra_prdc", "diversity", "class_accuracy",
                "class_kl"]
PER_CLASS = 40


def _split_in_halves(data: LongTailData) -> tuple[ImageDataset, ImageDataset]:
    """Every non-evaluation image (train + pool: ~150 per class, balanced), alternately into two halves per class."""
    images = torch.cat([data.train.images, data.pool.images])
    labels = torch.cat([data.train.labels, data.pool.labels])
    halves = ([], [])
    for k in range(data.num_classes):
        idx = (labels == k).nonzero().flatten()
        halves[0].append(idx[0::2])
        halves[1].append(idx[1::2])
    return tuple(ImageDataset(images[torch.cat(h)], labels[torch.cat(h)], data.class_names) for h in halves)


@pytest.fixture(scope="module")
def halves(digits_data):
    """(data whose evaluation split is pool half A, pool half B): real-vs-real from two halves of the balanced pool."""
    half_a, half_b = _split_in_halves(digits_data)
    data = LongTailData(train=digits_data.train, eval=half_a, groups=digits_data.groups,
                        spec={**digits_data.spec, "eval_split": "test: non-eval pool, half A"})
    return data, half_b


def real_sampler(images: ImageDataset, shuffle_labels: bool = False):
    """generate(labels) returning real images of the requested classes (or of random classes when shuffled)."""
    generator = torch.Generator().manual_seed(0)
    by_class = [(images.labels == k).nonzero().flatten() for k in range(images.num_classes)]

    def generate(labels):
        if shuffle_labels:
            labels = torch.randint(0, images.num_classes, labels.shape, generator=generator)
        picks = [by_class[k][torch.randint(len(by_class[k]), (1,), generator=generator)] for k in labels.tolist()]
        return images.as_float(torch.cat(picks))

    return generate


def noise_generate(labels):
    return torch.rand(len(labels), 1, 16, 16, generator=torch.Generator().manual_seed(len(labels))) * 2 - 1


@pytest.fixture(scope="module")
def evaluator(halves, annotator, cache_dir):
    data, _ = halves
    cfg = EvalConfig(metrics=list(CHEAP_GROUPS), samples_per_class=PER_CLASS)
    return Evaluator(data, cfg, annotator, cache_dir=cache_dir).prepare()


@pytest.fixture(scope="module")
def results(evaluator, halves):
    _, half_b = halves
    return {"real": evaluator.evaluate(real_sampler(half_b)), "noise": evaluator.evaluate(noise_generate),
            "ignores_label": evaluator.evaluate(real_sampler(half_b, shuffle_labels=True))}


def test_real_vs_real_is_small_and_noise_is_large(results):
    real, noise = results["real"].scalars, results["noise"].scalars
    for key in ("fid", "intra_fid", "fid_many", "fid_medium", "fid_few", "kid", "kid_few", "intra_kid"):
        assert real[key] < 0.05 * noise[key], key
    assert real["class_accuracy"] > 0.9 and real["class_kl"] < 0.05
    assert min(real["precision"], real["recall"], real["coverage"], real["intra_precision"]) > 0.6
    assert noise["precision"] < 0.1 and noise["coverage"] < 0.1
    assert 0.8 < real["diversity"] < 1.2 and 0.8 < real["intra_diversity"] < 1.2
    assert real["is"] > 2 * noise["is"]


def test_label_ignoring_generator_has_low_class_accuracy(results):
    real, ignoring = results["real"].scalars, results["ignores_label"].scalars
    assert ignoring["class_accuracy"] < 0.3
    assert ignoring["intra_fid"] > 5 * real["intra_fid"]  # per-class statistics see the wrong classes
    assert ignoring["fid"] < 0.2 * results["noise"].scalars["fid"]  # while the marginal is still real digits
    per_class = results["ignores_label"].per_class["class_accuracy"]
    assert len(per_class) == 10 and max(per_class) < 0.6


def test_result_keys_vectors_and_sample_counts(results, halves):
    data, _ = halves
    result = results["real"]
    assert set(result.scalars) == METRICS.keys_of(CHEAP_GROUPS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in result.scalars.values())
    for name in ("fid", "kid", "precision", "recall", "density", "coverage", "diversity", "class_accuracy"):
        assert len(result.per_class[name]) == data.num_classes, name
    assert result.scalars["intra_fid"] == pytest.approx(sum(result.per_class["fid"]) / 10)
    meta = result.meta
    assert meta["feature_space"] == "annotator" and meta["samples_per_class"] == PER_CLASS
    assert meta["generated_total"] == 10 * PER_CLASS and meta["real_per_class"] == data.eval.counts()
    counts = data.eval.counts()
    assert meta["real_reference"] == f"eval split, {min(counts)}-{max(counts)}/class ({sum(counts)})"
    assert meta["kid_estimate"] == "full sample"  # 40 per class < the 1000-sample subsets
    assert set(meta["timings"]) == {"generate_s", "features_s", "metrics_s", "total_s"}


def test_real_statistics_are_cached_across_evaluators(digits_data, annotator, tmp_path):
    cfg = EvalConfig(metrics=["fid", "intra_fid", "prdc"], samples_per_class=10)
    first = Evaluator(digits_data, cfg, annotator, cache_dir=tmp_path).prepare()
    assert first.real_stats_built
    artifacts = sorted((tmp_path / "real_stats").glob("*/real_stats.pt"))
    assert len(artifacts) == 1
    stamp = artifacts[0].stat().st_mtime_ns
    second = Evaluator(digits_data, cfg, annotator, cache_dir=tmp_path).prepare()
    assert not second.real_stats_built and artifacts[0].stat().st_mtime_ns == stamp
    assert second.evaluate(noise_generate).meta["real_stats"] == "cached"
    assert first.evaluate(noise_generate).scalars == second.evaluate(noise_generate).scalars
    # different evaluation images (same spec otherwise) are a different key: never a stale reuse
    smaller = LongTailData(train=digits_data.train, eval=ImageDataset(digits_data.eval.images[1:],
                                                                        digits_data.eval.labels[1:],
                                                                        digits_data.class_names),
                           groups=digits_data.groups, spec=digits_data.spec)
    assert Evaluator(smaller, cfg, annotator, cache_dir=tmp_path).prepare().real_stats_built
    assert len(list((tmp_path / "real_stats").glob("*/real_stats.pt"))) == 2


def test_generated_images_are_quantised_like_real_ones(evaluator, halves):
    _, half_b = halves
    floats = real_sampler(half_b)
    off_grid = real_sampler(half_b)  # same draws, nudged within the rounding interval
    as_uint8 = real_sampler(half_b)
    a = evaluator.evaluate(floats).scalars
    b = evaluator.evaluate(lambda labels: off_grid(labels) + 0.3 / 127.5).scalars
    c = evaluator.evaluate(lambda labels: to_uint8(as_uint8(labels))).scalars
    assert a == b == c


def test_cas_group_through_the_evaluator(digits_data, annotator, cache_dir, halves):
    cfg = EvalConfig(metrics=["cas"], samples_per_class=2, cas=CASConfig(steps=3, batch_size=16))
    result = Evaluator(digits_data, cfg, annotator, cache_dir=cache_dir).evaluate(real_sampler(halves[1]))
    assert set(result.scalars) == set(METRICS["cas"].keys)
    assert 0.0 <= result.scalars["cas"] <= 1.0 and 0.0 <= result.scalars["cas_real"] <= 1.0


def test_bad_configuration_is_named_before_any_work(digits_data, annotator):
    with pytest.raises(ValueError, match=r"eval.metrics\[1\]: unknown metric 'fidd'"):
        Evaluator(digits_data, EvalConfig(metrics=["fid", "fidd"]), annotator)
    with pytest.raises(ValueError, match="eval.prdc_k"):
        Evaluator(digits_data, EvalConfig(metrics=["intra_prdc"], samples_per_class=5, prdc_k=5), annotator)
    with pytest.raises(ValueError, match="annotator"):
        Evaluator(digits_data, EvalConfig(features="annotator"), None)


def test_bad_generator_output_is_named(evaluator):
    with pytest.raises(ValueError, match=r"must return 400 x 1 x 16 x 16"):
        evaluator.evaluate(lambda labels: torch.zeros(len(labels), 1, 8, 8))
    with pytest.raises(ValueError, match="NaN"):
        evaluator.evaluate(lambda labels: torch.full((len(labels), 1, 16, 16), float("nan")))
    with pytest.raises(ValueError, match="int64"):
        evaluator.evaluate(lambda labels: torch.zeros(len(labels), 1, 16, 16, dtype=torch.long))


def test_per_class_csv_and_fid_plot(results, halves, tmp_path):
    data, _ = halves
    result = results["real"]
    csv_path = write_per_class_csv(result, data, tmp_path / "per_class.csv")
    with open(csv_path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == data.num_classes
    assert [int(r["train_count"]) for r in rows] == data.train.counts()
    assert [r["group"] for r in rows[:3]] == ["many"] * 3 and rows[-1]["group"] == "few"
    assert [float(r["fid"]) for r in rows] == pytest.approx(result.per_class["fid"])
    assert set(result.per_class) <= set(rows[0])
    png = plot_fid_vs_class_size(result, data, tmp_path / "plots" / "fid_vs_size.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with pytest.raises(ValueError, match="intra_fid"):
        plot_fid_vs_class_size(EvalResult(), data, tmp_path / "none.png")


def test_real_reference_names_an_uneven_split_by_its_range():
    assert real_reference([30, 28, 30]) == "eval split, 28-30/class (88)"
