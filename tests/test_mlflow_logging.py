"""The driver-side MLflow callback: real Ray Tune runs of a tiny reporting trainable, real MLflow stores.

The trainable here is not a GAN (that is tests/test_tune.py): it follows the same reporting contract
(trainables.reporting) so these tests exercise only the logging, against sqlite and a real ``mlflow server``.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
import ray
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient
from ray import tune
from ray.tune.experiment import Trial

from trainables import reporting
from trainables.mlflow_logging import (MlflowSweepCallback, close_sweep_runs, default_tracking_uri, load_run_map,
                                       prepare_store)

pytestmark = pytest.mark.slow

RUN = {"method": {"name": "cbgan", "lambda": 7.5}, "dataset": {"source": "digits", "resolution": 8},
       "train": {"steps": 30, "eval_every": 10}, "eval": {"metrics": ["intra_fid"]}}
MAX_STEPS = 30


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    tmp = tempfile.mkdtemp(prefix="imbml", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=tmp, logging_level="ERROR")
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import a test module
    yield
    ray.shutdown()


def reporting_trainable(config, fail_marker: str | None = None):
    """Reports 3 evaluations with a checkpoint holding an artifact; fails once if ``fail_marker`` is absent."""
    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = int((Path(folder) / "step.txt").read_text())
    for step in range(start + 10, MAX_STEPS + 1, 10):
        if fail_marker and step == 20 and not os.path.exists(fail_marker):
            Path(fail_marker).write_text("failed once")
            raise RuntimeError("deliberate failure to test resume")
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "step.txt").write_text(str(step))
            (Path(folder) / reporting.ARTIFACTS_DIR).mkdir()
            (Path(folder) / reporting.ARTIFACTS_DIR / reporting.PER_CLASS_CSV).write_text(f"class,fid\n0,{step}\n")
            tune.report({"intra_fid": 100.0 / step * config["method.lambda"], reporting.STEP: step,
                         reporting.STATE: reporting.COMPLETED if step == MAX_STEPS else reporting.RUNNING},
                        checkpoint=tune.Checkpoint.from_directory(folder))


def ending_trainable(config):
    """Ends as its ``method.lambda`` says: 1 completes, 2 diverges at step 10, 3 runs until a stopper stops it at step
    20 (standing in for ASHA: Ray marks the result it stops on ``done`` either way)."""
    for step in range(10, MAX_STEPS + 1, 10):
        diverged = config["method.lambda"] == 2.0
        state = reporting.DIVERGED if diverged else reporting.COMPLETED if step == MAX_STEPS else reporting.RUNNING
        tune.report({"intra_fid": 100.0 / step * config["method.lambda"], reporting.STEP: step,
                     reporting.STATE: state})
        if diverged:
            return


def stop_lambda_3(trial_id: str, result: dict) -> bool:
    return result["config"]["method.lambda"] == 3.0 and result[reporting.STEP] >= 20


def sweep(tmp_path: Path, uri: str, lambdas: list[float], name: str = "mlsweep", trainable=reporting_trainable,
          stop=None):
    experiment_id = prepare_store(uri, "mltest", tmp_path / "mlartifacts")
    callback = MlflowSweepCallback(uri, experiment_id, name, tmp_path / "runs.json",
                                   sweep_tags={"searcher": "grid", "space": "test"})
    param_space = {"run": RUN, "sweep": {"metric": "intra_fid", "mode": "min"},
                   "method.lambda": tune.grid_search(lambdas)}
    tuner = tune.Tuner(trainable, param_space=param_space,
                       tune_config=tune.TuneConfig(reuse_actors=True),
                       run_config=tune.RunConfig(name=name, storage_path=str(tmp_path / "ray"), callbacks=[callback],
                                                 verbose=0, failure_config=tune.FailureConfig(max_failures=0),
                                                 stop=stop))
    return tuner, callback


def children(uri: str) -> tuple[list, list]:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("mltest")
    runs = client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL)
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return [r for r in runs if r not in nested], nested


@pytest.fixture(scope="module")
def mlflow_server():
    """A real ``mlflow server`` on 127.0.0.1 (a free port), sqlite backend, proxied artifacts."""
    folder = Path(tempfile.mkdtemp(prefix="imbmlsrv"))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--workers", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                urllib.request.urlopen(f"{uri}/health", timeout=2)
                break
            except OSError:
                assert proc.poll() is None and time.time() < deadline, "mlflow server did not start"
                time.sleep(0.5)
        yield uri
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_parent_and_nested_runs_with_params_metrics_and_artifacts(store, tmp_path, request):
    uri = request.getfixturevalue("mlflow_server") if store == "server" else default_tracking_uri(tmp_path)
    tuner, callback = sweep(tmp_path, uri, [1.0, 2.0])
    tuner.fit()
    parents, nested = children(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert parents[0].data.tags["searcher"] == "grid"
    assert len(nested) == 2
    client = MlflowClient(uri)
    for run in nested:
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.tags["final_state"] == "completed"
        assert run.data.tags["method"] == "cbgan" and run.data.tags["dataset"] == "digits"
        assert run.data.params["method.name"] == "cbgan" and run.data.params["train.steps"] == "30"
        assert run.data.params["method.cycle"] == "2000"  # defaults are params too: the full run config
        history = client.get_metric_history(run.info.run_id, "intra_fid")
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == [10, 20, 30]
        folders = [a.path for a in client.list_artifacts(run.info.run_id, "eval")]
        assert folders == ["eval/step_000010", "eval/step_000020", "eval/step_000030"]
        files = [a.path for a in client.list_artifacts(run.info.run_id, "eval/step_000030")]
        assert files == [f"eval/step_000030/{reporting.PER_CLASS_CSV}"]
    mapping = load_run_map(tmp_path / "runs.json")
    assert sorted(mapping["trials"].values()) == sorted(r.info.run_id for r in nested) and mapping["open"] == []


def test_resumed_sweep_reuses_runs_and_leaves_none_running(tmp_path):
    uri = default_tracking_uri(tmp_path)
    marker = tmp_path / "failed_once"
    trainable = tune.with_parameters(reporting_trainable, fail_marker=str(marker))
    tuner, _ = sweep(tmp_path, uri, [1.0], name="resumable", trainable=trainable)
    grid = tuner.fit()
    assert grid.errors and marker.exists()
    _, nested = children(uri)
    assert [r.info.status for r in nested] == ["FAILED"] and nested[0].data.tags["final_state"] == "error"
    first_id = nested[0].info.run_id

    restored = tune.Tuner.restore(str(tmp_path / "ray" / "resumable"), trainable=trainable,
                                  resume_errored=True)
    assert not restored.fit().errors
    parents, nested = children(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert [r.info.run_id for r in nested] == [first_id]  # the same run continued, no duplicate
    assert nested[0].info.status == "FINISHED" and nested[0].data.tags["final_state"] == "completed"
    assert nested[0].info.run_name == f"{nested[0].data.tags['trial_id']} completed · resumable"  # not "error"
    steps = sorted(m.step for m in MlflowClient(uri).get_metric_history(first_id, "intra_fid"))
    assert steps == [10, 20, 30]


def test_trial_run_names_lead_with_the_id_and_carry_the_final_state(tmp_path):
    """Issue #16: stopped and diverged trials looked like completed ones in MLflow's run list and compare plots,
    and ``sweep/trial`` names were cut to the sweep's name in the nested table."""
    uri = default_tracking_uri(tmp_path)
    tuner, callback = sweep(tmp_path, uri, [1.0, 2.0, 3.0], name="named", trainable=ending_trainable,
                            stop=stop_lambda_3)
    grid = tuner.fit()
    expected = {1.0: "completed", 2.0: "diverged", 3.0: "stopped_by_asha"}

    def names() -> dict[float, str]:
        _, nested = children(uri)
        assert len(nested) == 3 and {r.info.status for r in nested} == {"FINISHED"}
        for run in nested:
            assert run.data.tags["final_state"] == expected[float(run.data.params["method.lambda"])]
        return {float(r.data.params["method.lambda"]): (r.data.tags["trial_id"], r.info.run_name) for r in nested}

    for lam, (trial_id, name) in names().items():
        assert name == f"{trial_id} {expected[lam]} · named"
    client = MlflowClient(uri)
    for run in children(uri)[1]:  # a rename lost (or a run named by an older version): sync corrects it
        client.update_run(run.info.run_id, name=f"named/{run.data.tags['trial_id']}")
    assert callback.sync(grid, "intra_fid") == 3
    assert all(name == f"{tid} {expected[lam]} · named" for lam, (tid, name) in names().items())
    assert callback.sync(grid, "intra_fid") == 0  # idempotent
    callback.close()


def test_close_sweep_runs_terminates_what_a_crash_left_open(tmp_path):
    uri = default_tracking_uri(tmp_path)
    experiment_id = prepare_store(uri, "mltest", tmp_path / "mlartifacts")
    callback = MlflowSweepCallback(uri, experiment_id, "crashed", tmp_path / "runs.json", {})
    callback.setup()
    trial = Trial("reporting_trainable", config={"run": RUN, "method.lambda": 3.0}, trial_id="t0001", stub=True)
    callback.on_trial_start(0, [trial], trial)
    assert callback.flush(30), "the background writer did not create the runs"
    parents, nested = children(uri)
    assert [r.info.status for r in parents + nested] == ["RUNNING", "RUNNING"]

    close_sweep_runs(uri, tmp_path / "runs.json", "FAILED")  # what the CLI's finally does
    parents, nested = children(uri)
    assert parents[0].info.status == "FAILED"
    assert nested[0].info.status == "KILLED" and nested[0].data.tags["final_state"] == "interrupted"
    assert nested[0].info.run_name == "t0001 interrupted · crashed"
    assert nested[0].data.params["method.lambda"] == "3.0"


def test_experiment_opens_as_a_training_experiment(tmp_path):
    """MLflow 3's UI shows an untagged experiment in its GenAI ("Traces") view; ours carry the training kind."""
    from mlflow.tracking import MlflowClient

    from trainables.mlflow_logging import EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    old = client.create_experiment("made-elsewhere")  # an experiment created without the tag
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(old).tags
    for name in ("fresh", "made-elsewhere"):
        experiment_id = prepare_store(uri, name, tmp_path / "mlartifacts")
        assert client.get_experiment(experiment_id).tags[EXPERIMENT_KIND_TAG] == TRAINING_EXPERIMENT
