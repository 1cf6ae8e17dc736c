"""End-to-end: a tiny ensemble sweep (2 trials, ensemble size 2, reweighting none vs B) through the CLI, real Ray,
Optuna and MLflow (sqlite). The step counter runs over both members; CAS is logged beside intra-FID; the second
trial reuses the first's member 0."""
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


def test_both_trials_reach_both_members_with_a_global_step(sweep):
    summary = read_json(sweep["dir"] / "summary.json")
    assert [t["state"] for t in summary["trials"]] == [reporting.COMPLETED] * 2
    assert [t["steps"] for t in summary["trials"]] == [2 * STEPS] * 2
    for rows in ray_results(sweep["dir"]).values():
        assert all(0.0 <= r["cas"] <= 1.0 and 0.0 <= r["cas_real"] <= 1.0 for r in rows)
        assert len({r["cas_real"] for r in rows}) == 1  # the real-data reference is computed once


def test_the_second_trial_reuses_the_first_trials_member_0(sweep):
    """Member 0 does not depend on the reweighting (none vs B): the later trial loads it from the member cache under
    the storage path, reports once at its end with the same score, and trains member 1 only (issue #16 item 6)."""
    first, second = sorted(ray_results(sweep["dir"]).values(), key=lambda rows: rows[0]["started_at"])
    assert [r[reporting.STEP] for r in first] == [20, 40, 60, 80]
    assert [r["members"] for r in first] == [1, 1, 2, 2] and {r["members_reused"] for r in first} == {0}
    assert [r[reporting.STEP] for r in second] == [40, 60, 80]
    assert [r["members_reused"] for r in second] == [1, 1, 1]
    assert [r[reporting.STEPS_TRAINED] for r in second] == [0, 20, 40]
    assert second[0]["intra_fid"] == first[1]["intra_fid"]  # the same member 0, scored the same
    summary = read_json(sweep["dir"] / "summary.json")
    assert summary["total_steps"] == 4 * STEPS and summary["total_steps_trained"] == 3 * STEPS
    assert len(list((sweep["dir"].parent / ".member_cache" / "ensemble_member").glob("*/checkpoint.pt"))) == 3


def test_mlflow_has_metrics_params_and_weight_statistics(sweep):
    uri = f"sqlite:///{sweep['results'] / 'mlflow.db'}"
    parents, nested = split_runs(mlflow_runs(uri, "ens"))
    assert len(parents) == 1 and len(nested) == 2
    client = MlflowClient(tracking_uri=uri)
    methods, histories = set(), []
    for run in nested:
        method = run.data.params["ensemble.reweighting"]
        methods.add(method)
        assert run.data.params["ensemble.size"] == "2"
        histories.append(sorted(m.step for m in client.get_metric_history(run.info.run_id, "intra_fid")))
        assert run.data.metrics[reporting.STEPS_TRAINED] in (40, 80)  # the one that reused member 0 trained 40
        assert "cas" in run.data.metrics and "cas_real" in run.data.metrics
        files = [a.path.rsplit("/", 1)[-1] for a in client.list_artifacts(run.info.run_id, "eval/step_000080")]
        assert {"samples.png", "per_class.csv", "weight_stats.csv"} <= set(files)
        stats = client.download_artifacts(run.info.run_id, "eval/step_000080/weight_stats.csv")
        rows = open(stats).read().splitlines()
        # member 1 of the B trial was reweighted: one row per class; the baseline has only the header
        assert len(rows) == (1 + 10 if method == "B" else 1), rows
    assert methods == {"none", "B"}
    assert sorted(histories) == [[20, 40, 60, 80], [40, 60, 80]]  # the reusing trial's curve starts at member 0's end
