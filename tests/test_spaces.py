"""Search-space loading and validation (trainables.spaces) and the CLI's validation / --dry-run path."""
from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from trainables.spaces import SpaceError, load_space, param_space, trial_run_config
from trainables.tune import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "search_spaces").glob("*.yaml"))

BASE_RUN = {
    "method": {"name": "cbgan", "lambda": 7.5},
    "dataset": {"source": "digits", "resolution": 8},
    "train": {"steps": 40, "eval_every": 20},
    "eval": {"metrics": ["intra_fid", "class_accuracy"]},
}
SEARCH = {"metric": "intra_fid", "mode": "min", "num_samples": 2,
          "scheduler": {"asha": {"grace_period": 20, "reduction_factor": 2}},
          "searcher": {"optuna": {"sampler": "tpe", "seed": 0}}}


def write(tmp_path: Path, space: dict, run: dict | None = None, **top) -> Path:
    doc = {"name": "t", "run": run or BASE_RUN, "space": space, "search": SEARCH,
           "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0}, **top}
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_spaces_validate_and_dry_run(path, tmp_path, capsys):
    space = load_space(str(path))
    assert space.search.metric in space.describe()
    results = tmp_path / "results"
    assert main(["--space", str(path), "--results", str(results), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert space.name in out and "trials:" in out
    assert not results.exists()  # a dry run writes nothing


def test_every_bad_case_is_reported_at_once_with_exit_2_and_nothing_written(tmp_path, capsys):
    path = write(tmp_path, {
        "method.lambda": {"uniform": [-1.0, 5.0]},          # negative lambda
        "method.epsilon": {"uniform": [0.5, 1.5]},          # not a cbgan parameter
        "ensemble.size": {"randint": [0, 3]},                # size < 1
        "ensemble.reweighting": {"choice": ["A_mu", "Z"]},   # unknown reweighting method
        "train.nonsense": {"uniform": [0, 1]},               # dotted key not in the run config
        "train.lr_g": {"normal": [0, 1]},                    # unknown distribution
    }, search={**SEARCH, "metric": "lpips"}, bogus=1)       # metric not produced; unknown top-level key
    results = tmp_path / "results"
    assert main(["--space", str(path), "--results", str(results)]) == 2
    err = capsys.readouterr().err
    for needle in ("space.method.lambda", "-1.0 is below the valid range",
                   "space.method.epsilon", "not a parameter of method 'cbgan'",
                   "space.ensemble.size", "0 is below the valid range [1, 10]",
                   "space.ensemble.reweighting", "'Z' is not one of",
                   "space.train.nonsense: not a key of the run config",
                   "space.train.lr_g", "search.metric: 'lpips' is not produced", "bogus: unknown top-level key"):
        assert needle in err, needle
    assert not results.exists()


def test_epsilon_outside_its_range_for_contentstyle(tmp_path):
    run = {**BASE_RUN, "method": {"name": "contentstyle", "content_dim": 64, "style_dim": 64}}
    with pytest.raises(SpaceError, match=r"space.method.epsilon: 1.5 is above the valid range \(0.0, 1.0\]"):
        load_space(str(write(tmp_path, {"method.epsilon": {"uniform": [0.5, 1.5]}}, run=run)))
    with pytest.raises(SpaceError, match=r"space.method.epsilon: 0.0 is below"):
        load_space(str(write(tmp_path, {"method.epsilon": {"uniform": [0.0, 1.0]}}, run=run)))


def test_corners_catch_cross_key_problems(tmp_path):
    # content_dim + style_dim must equal z_dim: only the corners of the space reveal it
    run = {**BASE_RUN, "method": {"name": "contentstyle", "content_dim": 64, "style_dim": 64}}
    with pytest.raises(SpaceError, match="space corner .*content_dim \\+ method.style_dim must equal"):
        load_space(str(write(tmp_path, {"method.content_dim": {"randint": [32, 64]}}, run=run)))


@pytest.mark.parametrize("space, needle", [
    ({"dataset.imbalance.ratio": {"uniform": [10, 100]}}, "shared by all trials"),
    ({"train.n_dis": {"uniform": [1, 3]}}, "is an integer"),
    ({"method.lambda": {"loguniform": [0.0, 3.0]}}, "must be > 0"),
    ({"method.lambda": {"quniform": [0.0, 1.0, 0.3]}}, "must be > 0 and divide"),
    ({"method.cycle": {"uniform": [10, 100]}}, "integer parameter"),
])
def test_single_problems_name_the_key(tmp_path, space, needle):
    with pytest.raises(SpaceError) as info:
        load_space(str(write(tmp_path, space)))
    assert needle in str(info.value) and next(iter(space)) in str(info.value)


def test_cli_flags_are_validated_like_the_file(tmp_path, capsys):
    path = write(tmp_path, {"method.lambda": {"loguniform": [0.5, 20.0]}})
    assert main(["--space", str(path), "--num-samples", "0", "--gpus-per-trial", "lots", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "search.num_samples" in err and "resources.gpus_per_trial" in err
    assert main(["--space", str(path), "--max-steps", "10", "--dry-run"]) == 2  # eval_every 20 > 10 steps
    assert "train.eval_every" in capsys.readouterr().err
    assert main(["--space", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2
    assert "file not found" in capsys.readouterr().err


def _sample(space, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    return [space.suggest(study.ask()) for _ in range(n)]


def test_conditional_method_parameters(tmp_path):
    path = write(tmp_path, {
        "method.name": {"choice": ["cgan", "cbgan", "smooth"]},
        "method.lambda": {"loguniform": [0.5, 20.0], "when": {"method.name": "cbgan"}},
        "method.alpha": {"uniform": [0.0, 0.3], "when": {"method.name": ["smooth"]}},
    })
    space = load_space(str(path))
    assert space.method_names == ["cgan", "cbgan", "smooth"]
    seen = set()
    for overrides in _sample(space, 30):
        name = overrides["method.name"]
        seen.add(name)
        assert ("method.lambda" in overrides) == (name == "cbgan")
        assert ("method.alpha" in overrides) == (name == "smooth")
        cfg = trial_run_config({**param_space(space), **overrides})
        assert cfg.method.name == name
        if name == "smooth":
            assert 0.0 <= cfg.method["alpha"] <= 0.3  # smooth's alpha, not cbgan's forgetting factor
    assert seen == {"cgan", "cbgan", "smooth"}


def test_unconditional_parameter_of_a_searched_method_is_rejected(tmp_path):
    path = write(tmp_path, {"method.name": {"choice": ["cgan", "cbgan"]},
                            "method.lambda": {"uniform": [1.0, 2.0]}})
    with pytest.raises(SpaceError, match="'lambda' is not a parameter of method 'cgan'.*when"):
        load_space(str(path))


def test_list_choices_and_ensemble_conditions(tmp_path):
    path = write(tmp_path, {
        "ensemble.size": {"randint": [1, 2]},
        "ensemble.reweighting": {"choice": ["none", "A_mu", "B"]},
        "ensemble.generator_weights": {"choice": [[0.75, 0.25], [0.5, 0.5]], "when": {"ensemble.size": 2}},
    })
    space = load_space(str(path))
    samples = _sample(space, 20)
    for overrides in samples:
        cfg = trial_run_config({**param_space(space), **overrides})
        if cfg.ensemble.size == 2:
            assert cfg.ensemble.generator_weights in ([0.75, 0.25], [0.5, 0.5])
        else:
            assert cfg.ensemble.generator_weights is None
    assert {o["ensemble.size"] for o in samples} == {1, 2}


def test_wrong_weights_for_the_size_are_caught_at_the_corners(tmp_path):
    path = write(tmp_path, {"ensemble.size": {"randint": [1, 3]},
                            "ensemble.generator_weights": {"choice": [[0.5, 0.5]], "when": {"ensemble.size": [2, 3]}}})
    with pytest.raises(SpaceError, match="2 weights for ensemble.size 3"):
        load_space(str(path))


def test_quniform_and_randint_bounds_are_inclusive(tmp_path):
    space = load_space(str(write(tmp_path, {"method.cycle": {"randint": [10, 12]},
                                            "method.lambda": {"quniform": [1.0, 2.0, 0.5]}})))
    samples = _sample(space, 40)
    assert {s["method.cycle"] for s in samples} == {10, 11, 12}
    assert {s["method.lambda"] for s in samples} <= {1.0, 1.5, 2.0}


def _proposals(sampler, space, n: int) -> list[dict]:
    study = optuna.create_study(sampler=sampler)
    proposals = []
    for i in range(n):
        trial = study.ask()
        proposals.append(space.suggest(trial))
        study.tell(trial, float(i))
    return proposals


def test_tpe_start_up_length_comes_from_the_space(tmp_path):
    from trainables.searcher import make_sampler
    from trainables.spaces import OPTUNA_FIELDS
    searched = {"method.lambda": {"loguniform": [0.5, 20.0]}, "method.alpha": {"uniform": [0.1, 0.9]}}
    search = {**SEARCH, "searcher": {"optuna": {"sampler": "tpe", "seed": 3, "n_startup_trials": 2}}}
    space = load_space(str(write(tmp_path, searched, search=search)))
    assert space.search.n_startup_trials == 2 and "first 2 trials at random" in space.describe()
    random = _proposals(optuna.samplers.RandomSampler(seed=3), space, 4)
    short = _proposals(make_sampler("tpe", 3, space.search.n_startup_trials), space, 4)
    default = _proposals(make_sampler("tpe", 3, OPTUNA_FIELDS["n_startup_trials"].default), space, 4)
    assert short[:2] == random[:2] and short[2:] != random[2:]  # TPE takes over after 2 finished trials
    assert default == random  # Optuna's default start-up of 10 is still random at trial 4
    assert "whole sweep is random search" in load_space(str(write(tmp_path, searched))).describe()


@pytest.mark.parametrize("optuna_opts, needle", [
    ({"n_startup_trials": 0}, "n_startup_trials: 0 is below the valid range [1, inf)"),
    ({"n_startup_trials": 2.5}, "n_startup_trials: 2.5 is not an integer"),
    ({"sampler": "random", "n_startup_trials": 3}, "only the tpe sampler has a start-up phase"),
    ({"startup": 3}, "search.searcher.optuna.startup: unknown key (valid: sampler, seed, n_startup_trials)"),
])
def test_bad_tpe_start_up_is_rejected(tmp_path, optuna_opts, needle):
    search = {**SEARCH, "searcher": {"optuna": optuna_opts}}
    with pytest.raises(SpaceError) as info:
        load_space(str(write(tmp_path, {"method.lambda": {"loguniform": [0.5, 20.0]}}, search=search)))
    assert needle in str(info.value)


def test_an_ensembles_rungs_may_sit_past_its_first_member(tmp_path):
    """Issue #16: a rung at most train.steps falls inside member 0, the same in every trial of an ensemble space
    that searches the later members; the bound is the largest ensemble's budget (size x train.steps)."""
    run = {**BASE_RUN, "method": {"name": "cgan"}, "ensemble": {"size": 2}}
    ensemble = {"ensemble.size": {"randint": [1, 3]}, "ensemble.reweighting": {"choice": ["none", "B"]}}
    search = {**SEARCH, "scheduler": {"asha": {"grace_period": 60, "reduction_factor": 2}}}
    space = load_space(str(write(tmp_path, ensemble, run=run, search=search)))
    assert space.search.grace_period == 60 and space.max_budget == 120
    too_late = {**SEARCH, "scheduler": {"asha": {"grace_period": 140, "reduction_factor": 2}}}
    with pytest.raises(SpaceError, match=r"grace_period: 140 is above the largest ensemble's budget 120"):
        load_space(str(write(tmp_path, ensemble, run=run, search=too_late)))
    with pytest.raises(SpaceError, match=r"grace_period: 60 is above run.train.steps=40"):  # no ensemble: steps
        load_space(str(write(tmp_path, {"method.lambda": {"uniform": [1.0, 2.0]}}, search=search)))
