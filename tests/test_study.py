"""A study across methods (issue #15 item 4), through ``python -m trainables.study`` with real Ray, Optuna and MLflow:
the study's driver is killed (SIGKILL of its process group) during the first sweep and ``--resume`` finishes it; the
report's numbers equal those in the sweeps' summary.json files; the sweeps nest under the study's MLflow run; bad
input is refused before anything runs. Dodge et al.'s estimator is checked against brute force."""
from __future__ import annotations

import csv
import itertools
import statistics
import sys

import pytest
import yaml

from helpers_sweep import (TINY_RUN, kill_tree, mlflow_runs, private_workdir, read_json, run_cli, start, tail,
                           wait_until)
from trainables.confirm import mean_ci_text
from trainables.study_report import TABLE_METRICS, expected_best

pytestmark = pytest.mark.slow

BUDGET = 60  # steps per method's search: two trials of 40 at once, ended by the budget or at their end


def tiny_space(folder, name: str, method: dict, space: dict):
    run = yaml.safe_load(yaml.safe_dump(TINY_RUN))
    run["method"] = method
    run["train"].update(steps=40, eval_every=20)
    doc = {"name": name, "run": run, "space": space,
           "search": {"metric": "intra_fid", "mode": "min", "num_samples": 3, "scheduler": "fifo",
                      "searcher": {"optuna": {"sampler": "random", "seed": 0}}},
           "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def study_args(spaces, results, *extra):
    return [sys.executable, "-m", "trainables.study", "--spaces", *map(str, spaces), "--budget-steps", str(BUDGET),
            "--confirm", "1:2:2", "--results", str(results), "--name", "cmp", *extra]


@pytest.fixture(scope="module")
def workdir(cache_dir):
    with private_workdir(cache_dir, "imbs") as folder_and_env:
        yield folder_and_env


@pytest.fixture(scope="module")
def spaces(workdir):
    tmp, _ = workdir
    return [tiny_space(tmp, "plain", {"name": "cgan"}, {"train.lr_g": {"loguniform": [1e-4, 1e-3]}}),
            tiny_space(tmp, "balanced", {"name": "cbgan", "lambda": 2.0, "alpha": 0.5, "cycle": 10},
                       {"method.lambda": {"loguniform": [0.5, 10.0]}})]


@pytest.fixture(scope="module")
def study(workdir, spaces):
    """Killed with SIGKILL once the first sweep's trials have checkpoints, then resumed to the end."""
    tmp, env = workdir
    results = tmp / "results"
    first = results / "cmp" / "sweeps" / "plain"
    proc = start(study_args(spaces, results), env)
    try:
        wait_until(lambda: any(first.glob("*/checkpoint_*")), 300, "a checkpoint of the first sweep", proc=proc)
    finally:
        kill_tree(proc, env)  # SIGKILL: the study driver, its tune child and the child's Ray processes
    killed_state = read_json(results / "cmp" / "study.json")
    resumed = run_cli(study_args(spaces, results, "--resume"), env, timeout=700)
    assert resumed.returncode == 0, tail(resumed.stdout)
    return {"dir": results / "cmp", "out": resumed.stdout, "killed_state": killed_state,
            "uri": f"sqlite:///{results / 'cmp' / 'sweeps' / 'mlflow.db'}"}


def test_a_killed_study_resumes_and_finishes(study):
    assert study["killed_state"]["sweeps"][next(iter(study["killed_state"]["sweeps"]))]["status"] == "started"
    state = read_json(study["dir"] / "study.json")
    assert [s["status"] for s in state["sweeps"].values()] == ["done", "done"]
    assert "--resume" in study["out"]  # the interrupted sweep was resumed, not restarted
    for name in ("plain", "balanced"):
        summary = read_json(study["dir"] / "sweeps" / name / "summary.json")
        assert summary["status"] == "finished" and summary["budget"]["steps"] == BUDGET
        assert BUDGET <= summary["budget"]["steps_spent"] <= BUDGET + 2 * 20


def test_the_report_numbers_are_the_sweeps_numbers(study):
    with open(study["dir"] / "report" / "table.csv", encoding="utf-8") as fh:
        table = {row["method"]: row for row in csv.DictReader(fh)}
    assert set(table) == {"plain", "balanced"}
    report = (study["dir"] / "report" / "report.md").read_text()
    for name, row in table.items():
        summary = read_json(study["dir"] / "sweeps" / name / "summary.json")
        winner = summary["confirmation"]["configs"][0]
        assert row["winner_trial"] == winner["origin_trial"] == summary["best"]["trial_id"]
        for metric in TABLE_METRICS:
            stats = winner["metrics"][metric]
            assert float(row[f"{metric}_mean"]) == pytest.approx(stats["mean"])
            assert float(row[f"{metric}_ci95"]) == pytest.approx(stats["ci95"])
            assert int(row[f"{metric}_n"]) == 2 and stats["mean"] == pytest.approx(statistics.mean(stats["values"]))
        assert int(row["search_steps"]) == summary["total_steps_trained"]
        cell = winner["metrics"]["intra_fid"]
        assert f"| {mean_ci_text(cell['mean'], cell['ci95'])} (n=2) |" in report
    assert "Real reference: eval split, 30/class (300), held out from G and the annotator" in report
    for picture in ("expected_best.png", "per_class_fid.png", "samples.png"):
        assert (study["dir"] / "report" / picture).stat().st_size > 5000


def test_the_sweeps_nest_under_the_study_run(study):
    runs = mlflow_runs(study["uri"], "cmp")
    [study_run] = [r for r in runs if r.data.tags.get("kind") == "study"]
    sweep_runs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == study_run.info.run_id]
    assert sorted(r.data.tags["sweep"] for r in sweep_runs) == ["balanced", "plain"]
    assert study_run.info.status == "FINISHED"
    assert study_run.data.metrics["plain.intra_fid_mean"] == pytest.approx(
        read_json(study["dir"] / "sweeps" / "plain" / "summary.json")["confirmation"]["configs"][0]["metrics"]
        ["intra_fid"]["mean"])
    from mlflow.tracking import MlflowClient
    files = {a.path for a in MlflowClient(study["uri"]).list_artifacts(study_run.info.run_id, "report")}
    assert {"report/report.md", "report/table.csv", "report/expected_best.png"} <= files
    trial_runs = [r for r in runs if r.data.tags.get("stage") in ("search", "confirm")]
    assert trial_runs and {r.data.tags.get("real_reference") for r in trial_runs} == {"eval split, 30/class (300)"}


def test_spaces_that_evaluate_differently_are_refused(workdir, spaces, tmp_path):
    _, env = workdir
    other = yaml.safe_load(spaces[1].read_text())
    other["name"], other["run"]["eval"]["samples_per_class"] = "other", 30
    path = tmp_path / "other.yaml"
    path.write_text(yaml.safe_dump(other))
    proc = run_cli(study_args([spaces[0], path], tmp_path / "r"), env, timeout=120)
    assert proc.returncode == 2 and "differs from" in proc.stdout and "eval.samples_per_class" in proc.stdout
    assert not (tmp_path / "r").exists()
    again = run_cli(study_args(spaces, tmp_path / "r", "--resume"), env, timeout=120)
    assert again.returncode == 2 and "--resume: no study in" in again.stdout


@pytest.mark.parametrize("values, mode", [([3.0, 1.0, 2.0, 5.0], "min"), ([0.2, 0.9, 0.4], "max")])
def test_expected_best_equals_brute_force(values, mode):
    pick = min if mode == "min" else max
    for n in (1, 2, 3):
        draws = list(itertools.product(values, repeat=n))  # every equally likely n-trial draw with replacement
        assert expected_best(values, n, mode) == pytest.approx(sum(pick(d) for d in draws) / len(draws))
