"""Per-class metrics of an unconditional generator, grouped by the annotator's labels (issue #14 item 1), and the
metric registry that declares them (issue #13 item 1): a dropped class makes the score worse, never disappears."""
from pathlib import Path

import pytest
import torch

from imbgan_core.config import ConfigError, EvalConfig, RunConfig
from imbgan_core.data.types import ImageDataset, LongTailData
from imbgan_core.methods import config_problems
from imbgan_core.metrics.catalog import METRICS
from imbgan_core.metrics.evaluator import Evaluator
from imbgan_core.metrics.registry import MAX, MIN, NONE, MetricRegistry

from test_evaluator import _split_in_halves

GROUPS = ["fid", "intra_fid", "kid", "intra_kid", "intra_prdc", "class_kl", "class_fill"]
PER_CLASS = 40
DOCS = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"


@pytest.fixture(scope="module")
def setting(digits_data, annotator, cache_dir):
    """An evaluator on pool half A for an unconditional G, and half B to draw 'generated' images from."""
    half_a, half_b = _split_in_halves(digits_data)
    data = LongTailData(train=digits_data.train, eval=half_a, groups=digits_data.groups,
                        spec={**digits_data.spec, "eval_split": "test: non-eval pool, half A"})
    cfg = EvalConfig(samples_per_class=PER_CLASS, metrics=GROUPS)
    return Evaluator(data, cfg, annotator, cache_dir=cache_dir, conditional=False).prepare(), half_b


def label_blind(images: ImageDataset, classes: list[int]):
    """An 'unconditional G': ignores the labels it is given, returns real images of ``classes`` at random."""
    generator = torch.Generator().manual_seed(0)
    pool = torch.isin(images.labels, torch.tensor(classes)).nonzero().flatten()

    def generate(labels):
        return images.as_float(pool[torch.randint(len(pool), labels.shape, generator=generator)])

    return generate


def test_a_dropped_class_worsens_the_score_and_is_counted(setting):
    evaluator, half_b = setting
    every = evaluator.evaluate(label_blind(half_b, list(range(10))))
    dropped = evaluator.evaluate(label_blind(half_b, list(range(1, 10))))
    assert every.meta["class_labels"] == dropped.meta["class_labels"] == "annotator"
    assert every.scalars["underfilled_classes"] == 0 and every.meta["underfilled"] == []
    assert dropped.scalars["underfilled_classes"] >= 1 and 0 in dropped.meta["underfilled"]
    assert dropped.per_class["class_count"][0] < evaluator.cfg.min_class_samples
    # class 0 is scored on the whole pool, far from real zeros: worse than a filled class 0, and the mean with it
    assert dropped.per_class["fid"][0] > 2 * every.per_class["fid"][0]
    assert dropped.scalars["intra_fid"] > every.scalars["intra_fid"]
    assert dropped.scalars["intra_kid"] > every.scalars["intra_kid"]
    assert dropped.scalars["intra_recall"] < every.scalars["intra_recall"]
    assert dropped.scalars["class_kl"] > every.scalars["class_kl"]
    assert len(dropped.per_class["fid"]) == 10  # no class skipped


def test_a_conditional_generator_groups_by_its_own_labels(setting, digits_data, annotator, cache_dir):
    evaluator, half_b = setting
    by_class = [(half_b.labels == k).nonzero().flatten() for k in range(10)]

    def conditional(labels):
        return half_b.as_float(torch.cat([by_class[k][i % len(by_class[k])].view(1)
                                          for i, k in enumerate(labels.tolist())]))

    result = evaluator.evaluate(conditional, conditional=True)
    assert result.meta["class_labels"] == "conditioning"
    assert result.per_class["class_count"] == [float(PER_CLASS)] * 10 and result.scalars["underfilled_classes"] == 0


def test_unconditional_configs_refuse_only_metrics_that_read_the_conditioning_label():
    base = {"model": {"g_conditional": False, "d_conditional": False}, "method": {"name": "cbgan"}}
    assert not config_problems(RunConfig.from_dict(
        {**base, "eval": {"metrics": ["fid", "intra_fid", "kid", "class_kl", "class_fill"]}}))
    problems = config_problems(RunConfig.from_dict({**base, "eval": {"metrics": ["fid", "class_accuracy"]}}))
    assert len(problems) == 1 and problems[0].startswith("eval.metrics[1]: 'class_accuracy' compares each image")
    with pytest.raises(ConfigError, match=r"eval.min_class_samples: 60 exceeds eval.samples_per_class 50"):
        RunConfig.from_dict({**base, "eval": {"samples_per_class": 50, "min_class_samples": 60}})
    with pytest.raises(ConfigError, match=r"eval.metrics\[0\]: unknown metric 'fdi' \(valid: fid, intra_fid"):
        RunConfig.from_dict({"eval": {"metrics": ["fdi"]}})


def test_registration_refuses_what_would_make_two_lists_disagree():
    registry = MetricRegistry()
    registry.register("a", {"x": MIN}, labels=NONE, summary="")(lambda *a: None)
    for name, keys, labels, needs, message in [
        ("a", {"y": MIN}, NONE, (), "registered twice"),
        ("b", {"x": MAX}, NONE, (), "already reported by 'a'"),
        ("c", {"z": "lower"}, NONE, (), "direction 'lower'"),
        ("d", {"w": MIN}, "labels", (), "labels 'labels'"),
        ("e", {"v": MIN}, NONE, ("gpu",), "unknown needs"),
    ]:
        with pytest.raises(ValueError, match=message):
            registry.register(name, keys, labels=labels, needs=needs, summary="")(lambda *a: None)
    assert registry.names() == ["a"] and registry.direction("x") == MIN and registry.direction("nope") is None


def test_docs_table_is_the_registry():
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- metric-table:start -->\n", 1)[1].split("\n<!-- metric-table:end -->", 1)[0]
    assert table == METRICS.markdown_table(), "regenerate with: python -m imbgan_core.metrics.catalog"


def test_annotator_rows_regroup_and_pad():
    from imbgan_core.training import annotator_rows

    images = torch.arange(6, dtype=torch.uint8).view(6, 1, 1, 1) + 1
    rows = annotator_rows(images, torch.tensor([2, 0, 2, 2, 0, 1]), num_classes=3, per_class=2)
    assert rows.flatten().tolist() == [2, 5, 6, 0, 1, 3]  # class 1 seen once: padded with a black image


def test_an_unconditional_sample_grid_shows_each_class_in_its_row(digits_cfg, digits_data, annotator, lt_classifier,
                                                                  tmp_path, monkeypatch):
    """Rows of an unconditional G's grid hold images the annotator labels with the row's class (issue: the rows
    used to be the same label-blind mixture under class names)."""
    from imbgan_core.assets import Assets
    from imbgan_core.metrics.features import extract
    from imbgan_core.training import Run
    import imbgan_core.training as training

    cfg = RunConfig.from_dict({**digits_cfg.to_dict(), "method": {"name": "cbgan", "lambda": 1.0},
                               "model": {"arch": "sndcgan", "width": 0.125, "z_dim": 16, "g_conditional": False,
                                         "d_conditional": False},
                               "eval": {"samples_per_class": 10, "metrics": ["intra_fid", "class_kl"]}})
    run = Run(cfg, Assets(data=digits_data, annotator=annotator, classifier=lt_classifier), device="cpu")
    shown = {}
    with monkeypatch.context() as patch:  # catch the images the grid is drawn from
        patch.setattr(training, "save_sample_grid", lambda images, names, per_class, path: shown.update(images=images))
        run.save_sample_grid(tmp_path / "grid.png", per_class=4)
    images = shown["images"]
    labeller = run._prepared_evaluator().labeller
    filled = images.flatten(1).amax(1) > 0
    predicted = extract(labeller, images[filled])[1].argmax(1)
    rows = torch.arange(10).repeat_interleave(4)[filled]
    assert torch.equal(predicted, rows) and filled.sum() >= 4
    run.save_sample_grid(tmp_path / "grid.png", per_class=4)  # and the real file is written
    assert (tmp_path / "grid.png").stat().st_size > 1000
