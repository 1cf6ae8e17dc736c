"""End-to-end: a tiny ensemble sweep (2 trials, ensemble size 2, reweighting none vs B) through the CLI, real Ray,
Optuna and MLflow (sqlite). The step counter runs over both members; CAS is logged beside intra-FID."""
from __future__ import annotations

import copy

import pytest
from mlflow.tracking import MlflowClient

from helpers_sweep import TINY_RUN, mlflow_runs, ray_results, read_json, run_sweep_ok, split_runs, write_space
from trainables import reporting

pytestmark = pytest.mark.slow

STEPS, EVERY = 40, 20  # per member; two members -> reports at 20, 40, 60, 80


@pytest.fixture(scope="module")
def sweep(cache_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble_sweep")
    run = copy.deepcopy(TINY_RUN)
    run["method"] = {"name": "cgan"}
    run["train"] = {**run["train"], "steps": STEPS, "eval_every": EVERY, "diffaugment": ""}
    run["eval"]["metrics"] = ["intra_fid", "class_accuracy", "cas"]
    run["eval"]["cas"] = {"steps": 10, "batch_size": 16, "flips": False}
    run["ensemble"] = {"size": 2, "samples_per_class": 5}
    space = write_space(root / "space.yaml", name="ens", run=run,
                        space={"ensemble.reweighting": {"choice": ["none", "B"]}},
                        # Optuna's random sampler with seed 0 draws B, then none: both paths run
                        search={"num_samples": 2, "scheduler": "fifo",
                                "searcher": {"optuna": {"sampler": "random", "seed": 0}}},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1})
    results = root / "results"
    return {**run_sweep_ok(space, results, cache_dir), "dir": results / "ens"}


def test_both_trials_train_both_members_with_a_global_step(sweep):
    summary = read_json(sweep["dir"] / "summary.json")
    assert [t["state"] for t in summary["trials"]] == [reporting.COMPLETED] * 2
    assert [t["steps"] for t in summary["trials"]] == [2 * STEPS] * 2
    for rows in ray_results(sweep["dir"]).values():
        assert [r[reporting.STEP] for r in rows] == [20, 40, 60, 80]
        assert [r["members"] for r in rows] == [1, 1, 2, 2]
        assert all(0.0 <= r["cas"] <= 1.0 and 0.0 <= r["cas_real"] <= 1.0 for r in rows)
        assert len({r["cas_real"] for r in rows}) == 1  # the real-data reference is computed once


def test_mlflow_has_metrics_params_and_weight_statistics(sweep):
    uri = f"sqlite:///{sweep['results'] / 'mlflow.db'}"
    parents, nested = split_runs(mlflow_runs(uri, "ens"))
    assert len(parents) == 1 and len(nested) == 2
    client = MlflowClient(tracking_uri=uri)
    methods = set()
    for run in nested:
        method = run.data.params["ensemble.reweighting"]
        methods.add(method)
        assert run.data.params["ensemble.size"] == "2"
        history = client.get_metric_history(run.info.run_id, "intra_fid")
        assert sorted(m.step for m in history) == [20, 40, 60, 80]
        assert "cas" in run.data.metrics and "cas_real" in run.data.metrics
        files = [a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "eval/step_000080")]
        assert {"samples.png", "per_class.csv", "weight_stats.csv"} <= set(files)
        stats = client.download_artifacts(run.info.run_id, "eval/step_000080/weight_stats.csv")
        rows = open(stats).read().splitlines()
        # member 1 of the B trial was reweighted: one row per class; the baseline has only the header
        assert len(rows) == (1 + 10 if method == "B" else 1), rows
    assert methods == {"none", "B"}
