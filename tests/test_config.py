"""The typed run config: defaults, strict validation with dotted keys, round trip, overrides."""
import importlib
import re

import pytest

from imbgan_core.config import (
    ConfigError, RunConfig, apply_overrides, field_spec, flatten, load_yaml, method_params, parse_set, valid_keys,
)


def test_defaults_round_trip():
    cfg = RunConfig()
    data = cfg.to_dict()
    assert RunConfig.from_dict(data).to_dict() == data
    assert data["dataset"]["source"] == "digits"


@pytest.mark.parametrize("name", sorted(method_params()))
def test_every_method_gets_its_declared_defaults(name):
    cfg = RunConfig.from_dict({"method": {"name": name}, "model": {"z_dim": 128}})
    assert cfg.method.params == {k: p.default for k, p in method_params()[name].items()}
    assert RunConfig.from_dict(cfg.to_dict()).method.params == cfg.method.params


def test_all_problems_reported_with_dotted_keys():
    with pytest.raises(ConfigError) as err:
        RunConfig.from_dict({
            "train": {"steps": "many", "lr_g": -1, "bogus": 1},
            "dataset": {"imbalance": {"ratio": 0.5, "profile": "zipf"}},
            "method": {"name": "cbgan", "lambda": -2, "beta": "two", "gamma": 1},
        })
    text = "\n".join(err.value.problems)
    for needle in ["train.steps", "train.lr_g", "train.bogus: unknown key", "dataset.imbalance.ratio",
                   "dataset.imbalance.profile", "method.lambda", "method.beta", "method.gamma: unknown parameter"]:
        assert needle in text, needle
    assert len(err.value.problems) == 8


def test_unknown_method_and_metric():
    with pytest.raises(ConfigError, match="method.name: unknown method 'bigboost'"):
        RunConfig.from_dict({"method": {"name": "bigboost"}})
    with pytest.raises(ConfigError, match=r"eval.metrics\[1\]: unknown metric 'fidd'"):
        RunConfig.from_dict({"eval": {"metrics": ["fid", "fidd"]}})


def test_cross_checks():
    with pytest.raises(ConfigError, match="dataset.root: required"):
        RunConfig.from_dict({"dataset": {"source": "cifar10", "resolution": 32, "channels": 3}})
    with pytest.raises(ConfigError, match="content_dim"):
        RunConfig.from_dict({"method": {"name": "contentstyle", "content_dim": 10, "style_dim": 10}})
    with pytest.raises(ConfigError, match="ensemble.generator_weights"):
        RunConfig.from_dict({"ensemble": {"size": 2, "generator_weights": [1.0]}})


def test_epsilon_range_is_open_at_zero():
    with pytest.raises(ConfigError, match="method.epsilon"):
        RunConfig.from_dict({"method": {"name": "contentstyle", "epsilon": 0.0}})
    cfg = RunConfig.from_dict({"method": {"name": "contentstyle", "epsilon": 1.0}})
    assert cfg.method["epsilon"] == 1.0


def test_overrides_and_set_parsing():
    assert parse_set(["train.lr_g=1e-3", "name=abc"]) == {"train.lr_g": 1e-3, "name": "abc"}
    sets = parse_set(["train.steps=300", "method.name=smooth", "method.alpha=0.2", "train.diffaugment="])
    assert sets == {"train.steps": 300, "method.name": "smooth", "method.alpha": 0.2, "train.diffaugment": ""}
    cfg = RunConfig().replace(sets)
    assert cfg.train.diffaugment == ""
    assert cfg.train.steps == 300 and cfg.method.name == "smooth" and cfg.method["alpha"] == 0.2
    with pytest.raises(ConfigError, match="expected dotted.key=value"):
        parse_set(["nonsense"])
    assert apply_overrides({"a": {"b": 1}}, {"a.c.d": 2}) == {"a": {"b": 1, "c": {"d": 2}}}


def test_key_introspection():
    keys = valid_keys()
    assert {"train.steps", "method.lambda", "ensemble.size", "dataset.imbalance.ratio"} <= keys
    assert "train.nope" not in keys
    assert field_spec("method.lambda", "cbgan").range_problem(-1, 5)
    assert field_spec("method.lambda", "cbgan").range_problem(0.1, 20) is None
    tp, meta = field_spec("train.steps")
    assert tp is int and meta["param"].low == 1 and meta["param"].check(0)
    assert field_spec("train.nope") is None
    assert flatten({"a": {"b": 1, "c": [1, 2]}, "d": {}}) == {"a.b": 1, "a.c": [1, 2], "d": {}}


def test_yaml_reads_exponent_floats(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train: {lr_g: 1e-3, lr_d: 2E-4}\nname: 1e3x\n")
    cfg = RunConfig.from_yaml(str(path))
    assert cfg.train.lr_g == 1e-3 and cfg.train.lr_d == 2e-4 and cfg.name == "1e3x"


def test_yaml_errors_name_the_path(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1, 2\n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_yaml(str(bad))
    lst = tmp_path / "list.yaml"
    lst.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_yaml(str(lst))
    with pytest.raises(ConfigError, match="file not found"):
        load_yaml(str(tmp_path / "missing.yaml"))


@pytest.mark.parametrize("key, module, names", [
    ("model.arch", "imbgan_core.nets", "ARCHITECTURES"),
    ("dataset.source", "imbgan_core.data.sources", "LOADERS"),
    ("dataset.imbalance.profile", "imbgan_core.data.longtail", "PROFILES"),
    ("train.loss", "imbgan_core.methods.losses", "LOSSES"),
    ("classifier.arch", "imbgan_core.nets.classifier", "CLASSIFIER_ARCHS"),
    ("eval.features", "imbgan_core.metrics.features", "FEATURE_SPACES"),
    ("ensemble.reweighting", "imbgan_core.ensemble.reweighting", "TRANSFORMS"),
])
def test_choices_are_read_from_the_registry_that_owns_them(key, module, names, monkeypatch):
    """Issue #13: a backbone, source, profile, loss, classifier, feature space or reweighting added to its registry
    is a valid config value with no second list to edit; one removed from it is refused."""
    registry = importlib.import_module(module)
    owned = getattr(registry, names)
    added = {**owned, "newcomer": None} if isinstance(owned, dict) else (*owned, "newcomer")
    section, _, leaf = key.rpartition(".")
    raw = {}
    node = raw
    for part in section.split("."):
        node = node.setdefault(part, {})
    node[leaf] = "newcomer"
    with pytest.raises(ConfigError, match=re.escape(key)):
        RunConfig.from_dict(raw)
    monkeypatch.setattr(registry, names, added)
    problems = []
    try:
        RunConfig.from_dict(raw)
    except ConfigError as exc:
        problems = [line for line in str(exc).splitlines() if line.strip().startswith(f"{key}:")]
    assert not problems, problems
