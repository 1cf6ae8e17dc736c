"""End-to-end: ``python -m trainables.tune`` on digits-LT through real Ray, Optuna (TPE), ASHA and MLflow (sqlite).

One tiny sweep (3 trials x 60 steps, evaluation every 20, ASHA grace 20 / factor 3, one trial at a time so ASHA
has earlier results to compare with) runs once per module; the tests below read what it left behind.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import yaml
from optuna.trial import TrialState

from helpers_sweep import TINY_RUN, mlflow_runs, optuna_trials, read_json, run_sweep_ok, split_runs, write_space
from trainables import reporting

pytestmark = pytest.mark.slow

NUM_TRIALS, MAX_STEPS = 3, 60


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    space = write_space(root / "space.yaml", name="e2e",
                        search={"num_samples": NUM_TRIALS,
                                "scheduler": {"asha": {"grace_period": 20, "reduction_factor": 3}}},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": "auto", "max_concurrent": 1})
    results = root / "results"
    return {**run_sweep_ok(space, results, cache_dir), "dir": results / "e2e"}


def test_summary_files_and_table(sweep):
    summary = read_json(sweep["dir"] / "summary.json")
    assert len(summary["trials"]) == NUM_TRIALS
    assert summary["best"]["state"] == reporting.COMPLETED
    assert (sweep["dir"] / "trials.csv").read_text().count("\n") == NUM_TRIALS + 1
    values = [t["metrics"]["intra_fid"] for t in summary["trials"] if t["state"] == reporting.COMPLETED]
    assert values == sorted(values) and summary["best"]["metrics"]["intra_fid"] == values[0]
    assert summary["total_steps"] == sum(t["steps"] for t in summary["trials"]) < NUM_TRIALS * MAX_STEPS + 1
    assert 0 < summary["driver_cpu_seconds"] and 0 < summary["wall_seconds"]
    with open(summary["best"]["sample_grid"], "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert summary["best"]["trial_id"] in sweep["out"] and "best trial" in sweep["out"]


def test_one_progress_line_per_report(sweep):
    summary = read_json(sweep["dir"] / "summary.json")
    lines = [line for line in sweep["out"].splitlines() if line.startswith("trial ") and "intra_fid=" in line]
    expected = sum(t["steps"] // 20 for t in summary["trials"])
    assert len(lines) == expected, "\n".join(lines)
    assert "Traceback" not in sweep["out"]


def test_live_table_shows_progress_true_cutoffs_and_the_sweep_folder(sweep):
    """Issue #16: Ray's table named its session folder and showed ASHA's cutoffs negated (``Iter 20.000: -41.3``)."""
    out = sweep["out"]
    assert "Result logdir" not in out and f"Results: {sweep['dir']}" in out
    assert f"trials: {NUM_TRIALS}/{NUM_TRIALS} done (" in out and "steps/s | ETA" in out
    rungs = [line for line in out.splitlines() if line.strip().startswith("step 20: ")]
    assert rungs and not any(re.search(r": -\d", line) for line in rungs), rungs
    assert "UserWarning" not in out


def test_mlflow_trial_run_names_carry_id_and_final_state(sweep):
    summary = read_json(sweep["dir"] / "summary.json")
    _, nested = split_runs(mlflow_runs(f"sqlite:///{sweep['results'] / 'mlflow.db'}", "e2e"))
    names = {r.data.tags["trial_id"]: r.info.run_name for r in nested}
    assert names == {t["trial_id"]: f"{t['trial_id']} {t['state']} · e2e" for t in summary["trials"]}


def test_asha_stopped_trials_are_recorded_truthfully(sweep):
    summary = read_json(sweep["dir"] / "summary.json")
    states = {t["trial_id"]: t["state"] for t in summary["trials"]}
    stopped = [tid for tid, state in states.items() if state == reporting.STOPPED]
    assert stopped, f"ASHA stopped no trial: {states}"  # 3 sequential trials, rung at 20 of 60 steps
    assert all(t["steps"] < MAX_STEPS for t in summary["trials"] if t["state"] == reporting.STOPPED)

    trials = {t.user_attrs["ray_trial_id"]: t for t in optuna_trials(sweep["dir"] / "optuna.db")}
    assert sorted(trials) == sorted(states)
    for tid, state in states.items():
        ot = trials[tid]
        assert ot.user_attrs["final_state"] == state
        if state == reporting.STOPPED:
            assert ot.state == TrialState.PRUNED  # not COMPLETE: its value is a low-budget one
            assert sorted(ot.intermediate_values) == [20]
            assert ot.value == ot.intermediate_values[20]  # Optuna's convention for pruned trials
        else:
            assert ot.state == TrialState.COMPLETE and sorted(ot.intermediate_values) == [20, 40, 60]
            final = next(t for t in summary["trials"] if t["trial_id"] == tid)["metrics"]["intra_fid"]
            assert ot.value == pytest.approx(final)


def test_mlflow_parent_and_trial_runs(sweep):
    summary = read_json(sweep["dir"] / "summary.json")
    uri = summary["mlflow"]["tracking_uri"]
    assert uri == f"sqlite:///{sweep['results'] / 'mlflow.db'}"
    parents, nested = split_runs(mlflow_runs(uri, "e2e"))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].info.run_id == summary["mlflow"]["parent_run_id"]
    assert parents[0].data.tags["n_startup_trials"] == "10"  # the tiny space keeps Optuna's default
    assert len(nested) == NUM_TRIALS and {r.info.status for r in nested} == {"FINISHED"}
    states = {t["trial_id"]: t["state"] for t in summary["trials"]}
    from mlflow.tracking import MlflowClient
    client = MlflowClient(uri)
    for run in nested:
        tags, params = run.data.tags, run.data.params
        assert tags["final_state"] == states[tags["trial_id"]]
        assert tags["method"] == "cbgan" and tags["searcher"] == "optuna-tpe"
        assert float(params["method.lambda"]) > 0 and params["train.steps"] == str(MAX_STEPS)
        history = client.get_metric_history(run.info.run_id, "intra_fid")
        expected_steps = [20, 40, 60] if states[tags["trial_id"]] == reporting.COMPLETED else [20]
        assert sorted(m.step for m in history) == expected_steps
        files = {a.path for a in client.list_artifacts(run.info.run_id, "eval/step_000020")}
        assert f"eval/step_000020/{reporting.SAMPLE_GRID}" in files
        assert f"eval/step_000020/{reporting.PER_CLASS_CSV}" in files


def test_best_yaml_trains_with_the_core_cli(sweep, cache_dir, tmp_path):
    best = yaml.safe_load((sweep["dir"] / "best.yaml").read_text())
    summary = read_json(sweep["dir"] / "summary.json")
    assert best["method"]["lambda"] == pytest.approx(summary["best"]["config"]["method.lambda"])
    assert best["train"]["steps"] == MAX_STEPS and best["dataset"] == _resolved(TINY_RUN)["dataset"]
    assert best["train"]["threads"] == 1 and best["train"]["device"] == "cpu"  # what the trial ran with
    out = tmp_path / "retrain"
    # torch's default thread count here (no OMP_NUM_THREADS): best.yaml's train.threads must set the trial's own.
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    proc = subprocess.run([sys.executable, "-m", "imbgan_core.train", "--config", str(sweep["dir"] / "best.yaml"),
                           "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env={**env, "IMBGAN_CACHE": str(cache_dir)})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (out / "checkpoint.pt").exists() and (out / "samples.png").exists()
    retrained = read_json(out / "metrics.json")["scalars"]
    for name, value in summary["best"]["metrics"].items():  # issue #12: a retrain reproduces the trial's numbers
        assert retrained[name] == pytest.approx(value, rel=1e-6, abs=1e-9), (name, retrained[name], value)


def _resolved(run: dict) -> dict:
    from imbgan_core.config import RunConfig
    return RunConfig.from_dict(run).to_dict()


def test_optuna_study_names_its_objective(sweep):
    import optuna

    [study] = optuna.get_all_study_summaries(f"sqlite:///{sweep['dir'] / 'optuna.db'}")
    loaded = optuna.load_study(study_name=study.study_name, storage=f"sqlite:///{sweep['dir'] / 'optuna.db'}")
    assert loaded.metric_names == ["intra_fid"]


def test_configs_read_back_through_ray_are_the_trained_ones(sweep):
    """Issue #16: ``result.config["run"]["method"]["alpha"]`` returned the space's base value while the trained one
    sat under the dotted key only."""
    from ray.tune import ExperimentAnalysis

    summary = read_json(sweep["dir"] / "summary.json")
    analysis = ExperimentAnalysis(summary["ray_storage"])
    configs = analysis.get_all_configs()
    assert len(configs) == NUM_TRIALS
    for config in configs.values():
        dotted = {k: v for k, v in config.items() if k not in ("run", "sweep")}
        assert dotted, config
        for key, value in dotted.items():
            node = config["run"]
            for part in key.split("."):
                node = node[part]
            assert node == value, (key, node, value)


def test_the_sweep_run_carries_config_best_trial_files_and_plots(sweep):
    """Issue #16: the parent run was empty (no params, metrics, best trial, artifacts or system tags)."""
    from mlflow.tracking import MlflowClient

    summary = read_json(sweep["dir"] / "summary.json")
    uri, parent_id = summary["mlflow"]["tracking_uri"], summary["mlflow"]["parent_run_id"]
    client = MlflowClient(uri)
    parent = client.get_run(parent_id)
    params, tags, metrics = parent.data.params, parent.data.tags, parent.data.metrics
    assert params["method.lambda"] == "loguniform[0.5, 20.0]"  # searched: its distribution, not the base 7.5
    assert params["train.steps"] == str(MAX_STEPS) and params["search.metric"] == "intra_fid"
    assert params["search.scheduler"] == "asha" and params["resources.max_concurrent"] == "1"
    best = summary["best"]
    assert tags["best_trial_id"] == best["trial_id"] and tags["status"] == "finished"
    assert metrics["best_intra_fid"] == pytest.approx(best["metrics"]["intra_fid"])
    assert metrics["total_steps"] == summary["total_steps"]
    assert metrics["trials_completed"] + metrics["trials_stopped_by_asha"] == NUM_TRIALS
    assert tags["mlflow.user"] and tags["mlflow.source.name"].endswith("tune.py")
    files = {a.path for a in client.list_artifacts(parent_id, "sweep")}
    assert {"sweep/summary.json", "sweep/trials.csv", "sweep/best.yaml", "sweep/space.yaml"} <= files, files
    plots = {a.path for a in client.list_artifacts(parent_id, "sweep/plots")}
    expected = {"metric_vs_params.png", "parallel_coordinates.png", "anytime.png", "class_counts.csv"}
    assert {f"sweep/plots/{name}" for name in expected} <= plots, plots
    for name in expected - {"class_counts.csv"}:
        with open(sweep["dir"] / "plots" / name, "rb") as fh:
            assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    counts = (sweep["dir"] / "plots" / "class_counts.csv").read_text().splitlines()
    assert counts[0] == "class,name,train_images,group" and len(counts) == 11
