"""Resume-safe MLflow mirror of a sweep: one parent run per sweep, one nested run per trial, all driver-side.

Why not Ray's ``MLflowLoggerCallback`` / ``setup_mlflow``: after a driver restart the stock callback opens a second
run per resumed trial and leaves the first RUNNING, and trial-side logging races on sqlite schema creation
(REFERENCE.md, "Ray Tune / Optuna / MLflow facts"). Here the Ray trial id -> MLflow run id map is persisted as JSON
in the sweep directory after every change, so a resumed sweep reopens the same runs, and every run is terminated
(FINISHED / FAILED / KILLED) when its trial ends, when the sweep ends, and in ``close`` on failure.

Artifacts travel inside checkpoints: the trainable writes them to ``artifacts/`` of each reported checkpoint,
Ray persists checkpoints to the storage path (shared storage in a cluster), and this callback uploads them from
there, so trials never talk to the tracking store.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from imbgan_core.config import flatten
from trainables import reporting
from trainables.spaces import searched, trial_run_config

# Ray's own bookkeeping in every result: not metrics of the GAN.
RAY_RESULT_KEYS = frozenset({
    "timestamp", "time_this_iter_s", "pid", "training_iteration", "iterations_since_restore", "time_since_restore",
    "done", "checkpoint_dir_name", "date", "hostname", "node_ip", "config", "trial_id", "experiment_tag",
    "should_checkpoint", reporting.STEP, *reporting.FACTS,
})
QUIET_AFTER_FAILURE_S = 15.0  # after a failed write, leave the store alone this long (MLflow's retries block)
# MLflow's limits per log_batch call.
_BATCH_PARAMS, _BATCH_METRICS = 100, 1000
RUN_STATUS = {reporting.COMPLETED: "FINISHED", reporting.STOPPED: "FINISHED", reporting.DIVERGED: "FINISHED",
              reporting.ERROR: "FAILED", reporting.INTERRUPTED: "KILLED"}


# MLflow 3's UI opens an experiment without this tag in its GenAI view ("Traces"); this value opens the runs table.
EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"


def default_tracking_uri(results_dir: Path) -> str:
    """sqlite store shared by every sweep in ``results_dir`` (MLflow's default backend since 3.7)."""
    return f"sqlite:///{Path(results_dir).resolve() / 'mlflow.db'}"


def check_reachable(tracking_uri: str, timeout_s: int = 10) -> None:
    """Raise ConnectionError naming the URI when a remote tracking server does not answer (issue #7: a clear error
    before any trial starts). MLflow's own HTTP retries would otherwise wait minutes; here one try, ``timeout_s``.
    A local sqlite store needs no check: ``prepare_store`` creates it."""
    if not tracking_uri.startswith(("http://", "https://")):
        return
    overrides = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": str(timeout_s)}
    saved = {k: os.environ.get(k) for k in overrides}
    os.environ.update(overrides)
    try:
        MlflowClient(tracking_uri).search_experiments(max_results=1)
    except Exception as exc:  # connection refused, timeout, 401/403, not an MLflow server: all mean "unusable"
        reason = str(exc).splitlines()[0][:300]
        raise ConnectionError(f"MLflow tracking store {tracking_uri} is unreachable ({reason}); start the server "
                              f"(mlflow server --host 127.0.0.1 ...) or pass another --mlflow-uri") from None
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def prepare_store(tracking_uri: str, experiment: str, artifact_root: Path | None) -> str:
    """Create the store schema and the experiment once, on the driver, before any trial starts; return its id.

    Concurrent first use of a fresh sqlite file races on schema creation (REFERENCE.md), so nothing else may be the
    first to touch it. New experiments on a local store keep artifacts in ``artifact_root/<experiment>`` (a server
    chooses its own).
    """
    if tracking_uri.startswith("sqlite:///"):  # two sweeps starting at once must not both create the schema
        with FileLock(tracking_uri[len("sqlite:///"):] + ".lock"):
            return _prepare_experiment(MlflowClient(tracking_uri), tracking_uri, experiment, artifact_root)
    return _prepare_experiment(MlflowClient(tracking_uri), tracking_uri, experiment, artifact_root)


def _prepare_experiment(client: MlflowClient, tracking_uri: str, experiment: str, artifact_root: Path | None) -> str:
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        if found.tags.get(EXPERIMENT_KIND_TAG) != TRAINING_EXPERIMENT:
            client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT)
        return found.experiment_id
    location = None
    if artifact_root is not None and not tracking_uri.startswith(("http://", "https://")):
        location = (Path(artifact_root).resolve() / experiment).as_uri()
    return client.create_experiment(experiment, artifact_location=location,
                                    tags={EXPERIMENT_KIND_TAG: TRAINING_EXPERIMENT})


class MlflowSweepCallback(tune.Callback):
    """Driver-side tune Callback mirroring every trial into MLflow; see the module docstring."""

    _quiet_until = 0.0  # class defaults: a callback pickled by an older version (tuner.pkl) still unpickles
    missed = 0  # writes that failed or were skipped during an outage (sync() writes them at the end)

    def __init__(self, tracking_uri: str, experiment_id: str, sweep_name: str, run_map_path: Path,
                 sweep_tags: dict[str, str]):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.sweep_name = sweep_name
        self.run_map_path = Path(run_map_path)
        self.sweep_tags = sweep_tags
        self._client: MlflowClient | None = None
        self._map = load_run_map(self.run_map_path)

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self):  # Tuner pickles callbacks with the experiment; the client reconnects lazily
        return {**self.__dict__, "_client": None}

    @property
    def parent_run_id(self) -> str | None:
        return self._map["parent"]

    def run_id(self, trial_id: str) -> str | None:
        return self._map["trials"].get(trial_id)

    # -- lifecycle ------------------------------------------------------------------------------------------------
    def setup(self, **info):
        self._guarded("sweep start", self._open_parent)

    def _open_parent(self) -> None:
        self._map = load_run_map(self.run_map_path)
        if self._map["parent"] is None:
            run = self.client.create_run(self.experiment_id, run_name=self.sweep_name,
                                         tags={"sweep": self.sweep_name, **self.sweep_tags})
            self._map["parent"] = run.info.run_id
        else:
            self.client.update_run(self._map["parent"], status="RUNNING")
        self._save_map()

    def on_trial_start(self, iteration, trials, trial, **info):
        self._guarded("trial start", self._open_trial, trial)

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._guarded("trial restore", self._open_trial, trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._guarded("trial result", self._log_result, trial, result)

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        self._guarded("artifacts", self._log_artifacts, trial, checkpoint)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._guarded("trial end", self._close_trial, trial, reporting.final_state(trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._guarded("trial error", self._close_trial, trial, reporting.ERROR)

    def on_experiment_end(self, trials, **info):
        self._guarded("sweep end", terminate_open_runs, self.client, self._map, "FINISHED")
        self._save_map()

    def _guarded(self, what: str, write, *args) -> None:
        """One write to the store. A failing store must not end the sweep (issue #7): warn, leave the store alone for
        ``QUIET_AFTER_FAILURE_S``, and count the miss; ``sync_sweep`` writes what is missing when the sweep ends."""
        if time.monotonic() < self._quiet_until:
            self.missed += 1
            return
        try:
            write(*args)
        except Exception as exc:  # unreachable server, timeouts, locked sqlite: all are "the store failed"
            self.missed += 1
            self._quiet_until = time.monotonic() + QUIET_AFTER_FAILURE_S
            print(f"warning: MLflow store {self.tracking_uri} failed at {what} ({_first_line(exc)}); the sweep goes "
                  f"on and the missing records are written when it ends", flush=True)

    def _log_result(self, trial, result: dict) -> None:
        run_id = self._run_of(trial)
        self.client.log_batch(run_id, **result_records(result))

    def _log_artifacts(self, trial, checkpoint) -> None:
        run_id = self._run_of(trial)
        step = int((trial.last_result or {}).get(reporting.STEP, 0))
        with checkpoint.as_directory() as folder:
            artifacts = Path(folder) / reporting.ARTIFACTS_DIR
            if artifacts.is_dir():
                self.client.log_artifacts(run_id, str(artifacts), artifact_path=f"eval/step_{step:06d}")

    # -- helpers --------------------------------------------------------------------------------------------------
    def _open_trial(self, trial) -> str:
        """The trial's run marked RUNNING: created with params and tags on first sight, the same run after a resume."""
        run_id = self._run_of(trial)
        if trial.trial_id not in self._map["open"]:
            self.client.update_run(run_id, status="RUNNING")
            self._map["open"].append(trial.trial_id)
            self._save_map()
        return run_id

    def _run_of(self, trial) -> str:
        """The trial's run id; a trial seen first through a result (no start event) gets its run opened here."""
        run_id = self._map["trials"].get(trial.trial_id)
        if run_id is not None:
            return run_id
        run_id = self._create_trial_run(trial.trial_id, trial.config)
        self._map["open"].append(trial.trial_id)
        self._save_map()
        return run_id

    def _create_trial_run(self, trial_id: str, trial_config: dict) -> str:
        config = trial_run_config(trial_config).to_dict()
        tags = {"mlflow.parentRunId": self._map["parent"], "trial_id": trial_id, "sweep": self.sweep_name,
                "method": config["method"]["name"], "dataset": config["dataset"]["source"],
                "searcher": self.sweep_tags.get("searcher", ""), "searched": ",".join(sorted(searched(trial_config)))}
        run = self.client.create_run(self.experiment_id, run_name=f"{self.sweep_name}/{trial_id}", tags=tags)
        run_id = run.info.run_id
        params = [Param(k, _param_text(v)) for k, v in sorted(flatten(config).items())]
        for i in range(0, len(params), _BATCH_PARAMS):
            self.client.log_batch(run_id, params=params[i:i + _BATCH_PARAMS])
        self._map["trials"][trial_id] = run_id
        return run_id

    def sync(self, result_grid, metric: str, parent_status: str = "FINISHED") -> int:
        """After the sweep: write whatever the store lacks (runs, reported steps, final states) from Ray's record of
        every trial, so an outage mid-sweep leaves no gap; returns how many records were written. Idempotent.
        ``parent_status`` ends the sweep's run: KILLED for an interrupted sweep."""
        self._map = load_run_map(self.run_map_path)
        written = 0
        if self._map["parent"] is None:
            self._open_parent()
            written += 1
        for result in result_grid:
            trial_id = Path(result.path).name.rsplit("_", 1)[-1]
            run_id = self._map["trials"].get(trial_id) or self._create_trial_run(trial_id, result.config)
            logged = {m.step for m in self.client.get_metric_history(run_id, metric)}
            frame = result.metrics_dataframe
            for row in ([] if frame is None else frame.to_dict("records")):
                step = row.get(reporting.STEP)
                if step == step and step is not None and int(step) not in logged and metric in row:  # not NaN
                    self.client.log_batch(run_id, **result_records(row))
                    logged.add(int(step))
                    written += 1
            state = reporting.final_state(result.metrics, errored=result.error is not None)
            run = self.client.get_run(run_id)
            if run.info.status == "RUNNING" or run.data.tags.get("final_state") != state:
                self.client.log_batch(run_id, tags=[RunTag("final_state", state)])
                self.client.set_terminated(run_id, RUN_STATUS[state])
                written += 1
            if trial_id in self._map["open"]:
                self._map["open"].remove(trial_id)
        self.client.set_terminated(self._map["parent"], parent_status)
        self._save_map()
        return written

    def _close_trial(self, trial, state: str) -> None:
        run_id = self._run_of(trial)
        self.client.log_batch(run_id, tags=[RunTag("final_state", state)])
        self.client.set_terminated(run_id, RUN_STATUS[state])
        if trial.trial_id in self._map["open"]:
            self._map["open"].remove(trial.trial_id)
        self._save_map()

    def _save_map(self) -> None:
        save_run_map(self.run_map_path, self._map)


def result_records(result: dict) -> dict:
    """One report as MLflow records: numeric metrics at its ``step`` (Ray's bookkeeping left out), facts as tags."""
    step = int(result.get(reporting.STEP, result.get("training_iteration", 0)))
    names = [k for k in result if k not in RAY_RESULT_KEYS]
    timestamp = int(float(result.get("timestamp", 0)) * 1000)
    metrics = [Metric(k, v, timestamp, step) for k, v in reporting.numeric_metrics(result, names).items()]
    tags = [RunTag(k, str(result[k])) for k in reporting.TAGS
            if k in result and k != "started_at" and isinstance(result[k], (str, int, float))
            and str(result[k]) != "nan"]
    return {"metrics": metrics[:_BATCH_METRICS], "tags": tags}


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def load_run_map(path: Path) -> dict:
    """{"parent": run id, "trials": {Ray trial id: run id}, "open": [trial ids whose run is not terminated]}."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {"parent": None, "trials": {}, "open": []}


def save_run_map(path: Path, run_map: dict) -> None:
    """Atomic write: a driver killed mid-write leaves the previous map, never a torn file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(run_map, indent=1))
    os.replace(tmp, path)


def terminate_open_runs(client: MlflowClient, run_map: dict, parent_status: str) -> None:
    """Trial runs still open become KILLED (tag final_state=interrupted); the parent gets ``parent_status``."""
    for trial_id in list(run_map["open"]):
        run_id = run_map["trials"][trial_id]
        client.set_tag(run_id, "final_state", "interrupted")
        client.set_terminated(run_id, "KILLED")
        run_map["open"].remove(trial_id)
    if run_map["parent"] is not None:
        client.set_terminated(run_map["parent"], parent_status)


def close_sweep_runs(tracking_uri: str, run_map_path: Path, parent_status: str) -> None:
    """The driver's ``finally``: no run of this sweep stays RUNNING, whatever ended the sweep."""
    run_map = load_run_map(run_map_path)
    if run_map["parent"] is None:
        return
    terminate_open_runs(MlflowClient(tracking_uri), run_map, parent_status)
    save_run_map(run_map_path, run_map)


def _param_text(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
