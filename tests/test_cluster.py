"""A sweep through ``--address`` on a real multi-node Ray cluster on this machine (issue #7).

``ray.cluster_utils.Cluster`` builds a head (1 CPU, no GPU) and two worker nodes (2 CPUs, 1 logical GPU each) in
their own process tree, with token authentication on (a random token in the environment, as on a real cluster).
The CLI then runs 4 trials at ``--gpus-per-trial 0.5`` and ``--max-concurrent 4`` (without it Ray keeps one trial
pending at a time with a searcher, and short trials reuse the first node's actors) with a separate
``--storage-path``: the trials must spread
over both GPU nodes, two to a GPU at a time and never more, receive their assets through the object store, write
checkpoints to the storage path, and reach MLflow through the driver; the token must never be written anywhere.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from helpers_sweep import (cli_args, kill_leftovers, local_cluster, mlflow_runs, ray_results, read_json, run_cli,
                           short_tmpdir, space_document, split_runs, sweep_env, tail, write_space)

pytestmark = pytest.mark.slow

TRIALS, GPU_SHARE, STEPS = 4, 0.5, 40


@pytest.fixture(scope="module")
def cluster_sweep(cache_dir):
    tmp = short_tmpdir("imbc")
    env = sweep_env(Path(cache_dir), tmp / "ray")
    run = space_document()["run"]
    run["train"].update(steps=STEPS, eval_every=20)
    space = write_space(tmp / "cluster.yaml", name="cluster", run=run,
                        search={"num_samples": TRIALS, "scheduler": "fifo"},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": "auto"})
    results, storage = tmp / "results", tmp / "shared-storage"
    try:
        with local_cluster(env, workers=2, worker_cpus=2, worker_gpus=1, head_cpus=1) as info:
            proc = run_cli(cli_args(space, results, "--address", info["address"], "--storage-path", str(storage),
                                    "--gpus-per-trial", str(GPU_SHARE), "--max-concurrent", str(TRIALS),
                                    "--experiment", "cluster"), env, timeout=300)
        yield {"proc": proc, "info": info, "results": results, "storage": storage, "token": env["RAY_AUTH_TOKEN"],
               "rows": ray_results(storage / "cluster")}
    finally:
        kill_leftovers(env)
        shutil.rmtree(tmp, ignore_errors=True)


def test_cluster_sweep_succeeds(cluster_sweep):
    proc = cluster_sweep["proc"]
    assert proc.returncode == 0, tail(proc.stdout)
    summary = read_json(cluster_sweep["results"] / "cluster" / "summary.json")
    assert [t["state"] for t in summary["trials"]] == ["completed"] * TRIALS, summary["trials"]


def test_trials_ran_on_both_gpu_nodes(cluster_sweep):
    rows = cluster_sweep["rows"]
    assert len(rows) == TRIALS, sorted(rows)
    nodes = {tid: {r.get("node_id") for r in trial_rows} for tid, trial_rows in rows.items()}
    used = set().union(*nodes.values())
    assert used == set(cluster_sweep["info"]["worker_node_ids"]), (
        f"trials ran on {used}; GPU worker nodes are {cluster_sweep['info']['worker_node_ids']}")
    assert all(len(n) == 1 for n in nodes.values()), nodes  # no trial moved (nothing failed)
    assert {r["device"] for trial_rows in rows.values() for r in trial_rows} == {"cpu"}  # logical GPU, no CUDA


def test_two_trials_share_each_gpu_never_more(cluster_sweep):
    """Per node, the trials' [start, last report] intervals overlap two at a time at most, and do overlap."""
    per_node: dict[str, list[tuple[float, float]]] = {}
    for trial_rows in cluster_sweep["rows"].values():
        last = trial_rows[-1]
        start = float(last["started_at"])
        per_node.setdefault(last["node_id"], []).append((start, start + float(last["time_total_s"])))
    per_gpu = round(1 / GPU_SHARE)
    for node, spans in per_node.items():
        assert len(spans) == per_gpu, f"node {node} ran {len(spans)} trials, expected {per_gpu}"
        peak = max(sum(s <= t < e for s, e in spans) for t, _ in spans)
        assert peak == per_gpu, f"node {node}: {peak} trials at once on its one GPU, expected {per_gpu}"


def test_checkpoints_on_storage_path_and_metrics_in_mlflow(cluster_sweep):
    storage, results = cluster_sweep["storage"], cluster_sweep["results"]
    assert len(list(storage.rglob("checkpoint.pt"))) >= TRIALS
    assert not list(results.rglob("checkpoint.pt")), "checkpoints must go to --storage-path only"
    parents, nested = split_runs(mlflow_runs(f"sqlite:///{results / 'mlflow.db'}", "cluster"))
    assert len(parents) == 1 and len(nested) == TRIALS
    for run in nested:
        assert run.info.status == "FINISHED" and "intra_fid" in run.data.metrics, run.data.tags


def test_the_ray_token_is_never_written(cluster_sweep):
    """Security basics: the cluster's auth token appears in no result file, checkpoint, MLflow param or tag."""
    token = cluster_sweep["token"].encode()
    for root in (cluster_sweep["results"], cluster_sweep["storage"]):
        leaks = [p for p in root.rglob("*") if p.is_file() and token in p.read_bytes()]
        assert not leaks, f"the Ray token was written to {leaks}"
    _, nested = split_runs(mlflow_runs(f"sqlite:///{cluster_sweep['results'] / 'mlflow.db'}", "cluster"))
    for run in nested:
        texts = [*run.data.params.values(), *run.data.tags.values()]
        assert not any(cluster_sweep["token"] in t for t in texts), run.info.run_id
