"""Resume-safe MLflow mirror of a sweep: one parent run per sweep, one nested run per trial, all driver-side.

Why not Ray's ``MLflowLoggerCallback`` / ``setup_mlflow``: after a driver restart the stock callback opens a second
run per resumed trial and leaves the first RUNNING, and trial-side logging races on sqlite schema creation
(docs/reference.md#ray-mlflow-callback, #mlflow-sqlite-race). Here the Ray trial id -> MLflow run id map
(``RunMap``) is persisted as JSON in the sweep directory after every change, so a resumed sweep reopens the same
runs, and every run is terminated (FINISHED / FAILED / KILLED) when its trial ends, when the sweep ends, and in
``close_sweep_runs`` on failure.

Writes never block Ray's scheduling (issue #12, item 4): Ray calls the hooks on the driver's scheduling thread, and
one write to an unreachable server used to hang there for minutes in MLflow's own retries. The hooks only put a
task on the bounded queue of a background writer (``trainables.mlflow_writer``) that writes in order on its own
thread, prints one line when the store becomes unreachable and one when it is back, and keeps what is pending
until then. One writer serves a sweep's run map in a process: the callback Ray restores from ``tuner.pkl`` on
``--resume``, the one the CLI builds, ``sync`` and ``close_sweep_runs`` all go through it, so nothing is ever
written concurrently. Run creation is idempotent: before creating a trial's run the writer looks it up by its
``trial_id`` tag under the sweep's parent run (a create whose answer was lost, or a driver killed before the map
was saved, leaves a run that is found and reused), and the parent by a ``sweep_key`` tag saved in the map first.

Trial runs are named ``<trial id>[ <final state>] · <sweep>`` (``trial_run_name``): the id first, since MLflow's
nested table cuts long names, and the state once the trial ended, since the run list and the compare plots show
names, not tags (issue #16). Names are written with the state by the same writes that terminate a run, and ``sync``
corrects a name that disagrees. Runs are always found by their ``trial_id`` tag, never by name.

Artifacts travel inside checkpoints: the trainable writes them to ``artifacts/`` of each reported checkpoint,
Ray persists checkpoints to the storage path (shared storage in a cluster), and this callback uploads them from
there, so trials never talk to the tracking store.
"""
from __future__ import annotations

import json
import os
import threading
import time
import uuid
from pathlib import Path

from filelock import FileLock
from mlflow.entities import Metric, Param, RunTag, ViewType
from mlflow.tracking import MlflowClient
from mlflow.tracking.context.registry import resolve_tags
from ray import tune

from imbgan_core.config import flatten
from trainables import reporting
from trainables.mlflow_writer import ARTIFACT, ESSENTIAL, MAXSIZE, RESULT, MlflowWriter
from trainables.spaces import searched, trial_run_config

# Ray's own bookkeeping in every result: not metrics of the GAN.
RAY_RESULT_KEYS = frozenset({
    "timestamp", "time_this_iter_s", "pid", "training_iteration", "iterations_since_restore", "time_since_restore",
    "done", "checkpoint_dir_name", "date", "hostname", "node_ip", "config", "trial_id", "experiment_tag",
    "should_checkpoint", reporting.STEP, *reporting.FACTS,
})
END_FLUSH_S = 10.0  # on_experiment_end waits this long for pending writes (the sweep is over: nothing to block)
SYNC_STALL_S = 10.0  # sync / close_sweep_runs give up when no write completed for this long (the store is down)
# MLflow's limits per log_batch call.
_BATCH_PARAMS, _BATCH_METRICS = 100, 1000
_PARAM_CHARS = 6000  # MLflow's longest param value
RUN_STATUS = {reporting.COMPLETED: "FINISHED", reporting.STOPPED: "FINISHED", reporting.STOPPED_BY_BUDGET: "FINISHED",
              reporting.DIVERGED: "FINISHED",
              reporting.ERROR: "FAILED", reporting.INTERRUPTED: "KILLED"}


NAME_SEP = " · "  # trial run names: "<trial id>[ <final state>] · <sweep>"


def trial_run_name(trial_id: str, sweep_name: str, state: str | None = None) -> str:
    """The trial id first (MLflow's nested run table cuts names after ~20 characters), then the final state once
    the trial ended (the run list and the compare plots label runs by name only), then the sweep."""
    head = trial_id if state is None else f"{trial_id} {state}"
    return f"{head}{NAME_SEP}{sweep_name}"


# The experiment's kind, as MLflow's own experiment-kind selector records it: a model-training experiment.
EXPERIMENT_KIND_TAG, TRAINING_EXPERIMENT = "mlflow.experimentKind", "custom_model_development"
# MLflow 3.17's UI picks GenAI or "Model training" per browser (a stored switch, GenAI by default), not by the kind
# tag: an experiment opened without this query showed "Traces 0" (tests/test_mlflow_ui.py, real Chromium).
UI_TRAINING_QUERY = "workflowType=machine_learning"
LOCAL_UI = "http://127.0.0.1:5000"  # `make mlflow-ui`


def ui_link(tracking_uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The MLflow UI page of an experiment (or one of its runs) in the runs-table view. A server's own address for
    an http(s) store; for a local store, where ``make mlflow-ui`` serves it."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith(("http://", "https://")) else LOCAL_UI
    page = f"experiments/{experiment_id}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base}/#/{page}?{UI_TRAINING_QUERY}"


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

    Concurrent first use of a fresh sqlite file races on schema creation (docs/reference.md#mlflow-sqlite-race), so
    nothing else may be the first to touch it. New experiments on a local store keep artifacts in
    ``artifact_root/<experiment>`` (a server chooses its own).
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


class RunMap:
    """The Ray trial id -> MLflow run id map of one sweep, saved atomically as JSON (``mlflow_runs.json``).

    On disk: ``{"parent": run id or null, "trials": {trial id: run id}, "open": [trial ids whose run is not
    terminated], "sweep_key": random id tagged on the parent run, saved before the parent is created}``. Changed only
    by the sweep's writer thread (or by ``close_sweep_runs`` when no writer is live); ``m["parent"]``,
    ``m["trials"]`` and ``m["open"]`` read like the plain dict of earlier versions (copies: read-only).
    """

    def __init__(self, path: Path | None, data: dict | None = None):
        data = data or {}
        self.path = None if path is None else Path(path)
        self._parent: str | None = data.get("parent")
        self._trials: dict[str, str] = dict(data.get("trials") or {})
        self._open: list[str] = list(data.get("open") or [])
        self._key: str | None = data.get("sweep_key")

    @classmethod
    def load(cls, path: Path) -> "RunMap":
        path = Path(path)
        return cls(path, json.loads(path.read_text()) if path.exists() else None)

    def save(self) -> None:
        """Atomic write: a driver killed mid-write leaves the previous map, never a torn file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f"{self.path.name}.{os.getpid()}.tmp")
        with open(tmp, "w") as handle:
            json.dump(self.to_dict(), handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    @property
    def parent(self) -> str | None:
        return self._parent

    def set_parent(self, run_id: str) -> None:
        self._parent = run_id

    def sweep_key(self) -> str:
        """The parent run's lookup key (created on first use; save before creating the parent run)."""
        if self._key is None:
            self._key = uuid.uuid4().hex
        return self._key

    def run_of(self, trial_id: str) -> str | None:
        return self._trials.get(trial_id)

    def add_trial(self, trial_id: str, run_id: str) -> None:
        self._trials[trial_id] = run_id

    def mark_open(self, trial_id: str) -> bool:
        """Record the trial's run as RUNNING; False when it already was."""
        if trial_id in self._open:
            return False
        self._open.append(trial_id)
        return True

    def mark_closed(self, trial_id: str) -> bool:
        """Record the trial's run as terminated; False when it already was."""
        if trial_id not in self._open:
            return False
        self._open.remove(trial_id)
        return True

    def is_open(self, trial_id: str) -> bool:
        return trial_id in self._open

    def open_trials(self) -> list[str]:
        return list(self._open)

    def trials(self) -> dict[str, str]:
        return dict(self._trials)

    def to_dict(self) -> dict:
        out = {"parent": self._parent, "trials": dict(self._trials), "open": list(self._open)}
        if self._key is not None:
            out["sweep_key"] = self._key
        return out

    def __getitem__(self, key: str):
        return self.to_dict()[key]


class _SweepStore:
    """One sweep's run map and the one writer that changes it, shared in a process by every callback object of the
    sweep (the one Ray restored from tuner.pkl, the one the CLI built), ``sync`` and ``close_sweep_runs``."""

    def __init__(self, tracking_uri: str, run_map_path: Path, queue_size: int):
        self.tracking_uri = tracking_uri
        self.run_map = RunMap.load(run_map_path)
        self.writer = MlflowWriter(tracking_uri, lambda: MlflowClient(tracking_uri), maxsize=queue_size)
        self.sync_batch: list | None = None


_STORES: dict[Path, _SweepStore] = {}
_STORES_LOCK = threading.Lock()


def _sweep_store(tracking_uri: str, run_map_path: Path, queue_size: int = MAXSIZE,
                 create: bool = True) -> _SweepStore | None:
    key = Path(run_map_path).resolve()
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None and create:
            store = _STORES[key] = _SweepStore(tracking_uri, key, queue_size)
        return store


def _release_store(run_map_path: Path, store: _SweepStore) -> None:
    with _STORES_LOCK:
        if _STORES.get(Path(run_map_path).resolve()) is store:
            del _STORES[Path(run_map_path).resolve()]


class MlflowSweepCallback(tune.Callback):
    """Driver-side tune Callback mirroring every trial into MLflow; see the module docstring.

    The hooks only enqueue. After ``fit``: ``flush(timeout_s)`` (wait for pending writes), ``sync(grid, metric)``
    (write what the store lacks from Ray's records), ``close()``. Pickled with Ray's experiment state (tuner.pkl):
    only the settings travel; the writer, its thread and client start again lazily after unpickling.
    """

    _STATE = ("tracking_uri", "experiment_id", "sweep_name", "run_map_path", "sweep_tags", "queue_size")
    queue_size = MAXSIZE  # class default: a callback pickled by an older version (tuner.pkl) still unpickles

    def __init__(self, tracking_uri: str, experiment_id: str, sweep_name: str, run_map_path: Path,
                 sweep_tags: dict[str, str], queue_size: int = MAXSIZE):
        self.tracking_uri = tracking_uri
        self.experiment_id = experiment_id
        self.sweep_name = sweep_name
        self.run_map_path = Path(run_map_path)
        self.sweep_tags = sweep_tags
        self.queue_size = queue_size

    def __getstate__(self):  # settings only: no thread, queue, lock or client in tuner.pkl
        return {k: self.__dict__[k] for k in self._STATE if k in self.__dict__}

    def __setstate__(self, state):  # older pickles carried _map / _client / _quiet_until: ignored
        self.__dict__.update({k: v for k, v in state.items() if k in self._STATE})
        self.run_map_path = Path(self.run_map_path)

    @property
    def _store(self) -> _SweepStore:
        return _sweep_store(self.tracking_uri, self.run_map_path, self.queue_size)

    @property
    def writer(self) -> MlflowWriter:
        return self._store.writer

    @property
    def parent_run_id(self) -> str | None:
        return self._store.run_map.parent

    def run_id(self, trial_id: str) -> str | None:
        return self._store.run_map.run_of(trial_id)

    @property
    def pending(self) -> int:
        """Writes queued or in flight."""
        store = _sweep_store(self.tracking_uri, self.run_map_path, create=False)
        return 0 if store is None else store.writer.pending

    @property
    def dropped(self) -> dict[str, int]:
        """Result / artifact writes evicted from a full queue (their metrics are written by ``sync``)."""
        store = _sweep_store(self.tracking_uri, self.run_map_path, create=False)
        return {RESULT: 0, ARTIFACT: 0} if store is None else dict(store.writer.dropped)

    # -- Ray's hooks: enqueue and return ----------------------------------------------------------------------------
    def setup(self, **info):
        self._submit(ESSENTIAL, "sweep start", self._open_parent)

    def on_trial_start(self, iteration, trials, trial, **info):
        self._submit(ESSENTIAL, f"start {trial.trial_id}", self._open_trial, trial.trial_id, dict(trial.config))

    def on_trial_restore(self, iteration, trials, trial, **info):
        self._submit(ESSENTIAL, f"restore {trial.trial_id}", self._open_trial, trial.trial_id, dict(trial.config))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._submit(RESULT, f"result {trial.trial_id}", self._log_result, trial.trial_id, dict(trial.config),
                     result_records(result))

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info):
        step = int((trial.last_result or {}).get(reporting.STEP, 0))
        self._submit(ARTIFACT, f"artifacts {trial.trial_id}", self._log_artifacts, trial.trial_id,
                     dict(trial.config), checkpoint, step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._submit(ESSENTIAL, f"end {trial.trial_id}", self._close_trial, trial.trial_id, dict(trial.config),
                     reporting.final_state(trial.last_result))

    def on_trial_error(self, iteration, trials, trial, **info):
        self._submit(ESSENTIAL, f"error {trial.trial_id}", self._close_trial, trial.trial_id, dict(trial.config),
                     reporting.ERROR)

    def on_experiment_end(self, trials, **info):
        """The sweep is over (nothing left to schedule): queue the final closes and wait a little for the store, so
        that whoever reads MLflow right after ``fit`` sees the sweep; ``sync`` writes whatever is still missing."""
        if self._submit(ESSENTIAL, "sweep end", self._end_sweep) is not None and not self.writer.is_down:
            self.writer.flush(END_FLUSH_S)  # a store known to be down: not here (flush / sync after fit wait)

    def _submit(self, kind: str, label: str, write, *args):
        """Queue ``write(client, run_map, *args)`` on the sweep's writer; never raises into Ray."""
        try:
            store = self._store
            return store.writer.submit(kind, label, lambda client: write(client, store.run_map, *args))
        except Exception as exc:  # noqa: BLE001 - a closed writer, a bug: the sweep must go on
            print(f"warning: MLflow write '{label}' not queued ({exc}); the end-of-sweep sync writes it",
                  flush=True)
            return None

    # -- after fit: flush, sync, close ----------------------------------------------------------------------------
    def flush(self, timeout_s: float = 60.0) -> bool:
        """Wait until every queued write is done, at most ``timeout_s``; True when nothing is left pending."""
        store = _sweep_store(self.tracking_uri, self.run_map_path, create=False)
        return True if store is None else store.writer.flush(timeout_s)

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write what is pending (at most ``timeout_s``) and stop the writer; a later write starts a new one. True
        when nothing was left unwritten (what was is in Ray's records: ``--resume`` syncs it)."""
        store = _sweep_store(self.tracking_uri, self.run_map_path, create=False)
        if store is None:
            return True
        try:
            return store.writer.close(timeout_s)
        finally:
            _release_store(self.run_map_path, store)

    def sync(self, result_grid, metric: str, parent_status: str = "FINISHED") -> int:
        """After the sweep: write whatever the store lacks (runs, reported steps, final states) from Ray's record of
        every trial, so an outage or a dropped write leaves no gap; returns how many records were written.
        Idempotent. ``parent_status`` ends the sweep's run: KILLED for an interrupted sweep.

        Runs on the writer, after every write queued before it. Raises TimeoutError when no write completed for
        ``SYNC_STALL_S`` (the store is down); the queued sync goes on in the background and a second call waits for
        it (``trainables.sweep.sync_mlflow`` retries)."""
        store = self._store
        batch = store.sync_batch
        if batch is None or all(t.done.is_set() for t in batch):
            batch = [store.writer.submit(ESSENTIAL, "sync: sweep run", lambda c: self._ensure_parent(c, store.run_map))]
            for result in result_grid:
                trial_id = reporting.result_trial_id(result)
                frame = result.metrics_dataframe
                rows = [] if frame is None else frame.to_dict("records")
                state = reporting.final_state(result.metrics, errored=result.error is not None)
                batch.append(store.writer.submit(
                    ESSENTIAL, f"sync {trial_id}",
                    lambda c, a=(trial_id, dict(result.config or {}), rows, state): self._sync_trial(
                        c, store.run_map, *a, metric)))
            batch.append(store.writer.submit(ESSENTIAL, "sync: sweep end",
                                             lambda c: self._end_parent(c, store.run_map, parent_status)))
            store.sync_batch = batch
        store.writer.wait(batch, SYNC_STALL_S)
        store.sync_batch = None
        for task in batch:
            if task.error is not None:
                raise task.error
            if task.dropped:
                raise RuntimeError(f"MLflow sync '{task.label}' was discarded (the writer was closed)")
        return sum(task.value or 0 for task in batch)

    # -- writes (on the writer thread) ----------------------------------------------------------------------------
    def _ensure_parent(self, client: MlflowClient, m: RunMap) -> int:
        """The sweep's parent run, created once: found by its ``sweep_key`` when a create's answer was lost.
        Returns 1 when the map lacked it (created or found), else 0."""
        if m.parent is not None:
            return 0
        key = m.sweep_key()
        m.save()  # the key is on disk before the create: a retry after a lost answer finds the run by it
        found = _find_runs(client, self.experiment_id, f"tags.sweep_key = '{key}'")
        if found:
            m.set_parent(found[0].info.run_id)
        else:
            run = client.create_run(self.experiment_id, run_name=self.sweep_name,
                                    tags={**system_tags(), "sweep": self.sweep_name, "sweep_key": key,
                                          **self.sweep_tags})
            m.set_parent(run.info.run_id)
        m.save()
        return 1

    def _open_parent(self, client: MlflowClient, m: RunMap) -> None:
        """The sweep's run RUNNING: new, or the one of an earlier session (``--resume``) reopened."""
        self._ensure_parent(client, m)
        client.update_run(m.parent, status="RUNNING")

    def _trial_run(self, client: MlflowClient, m: RunMap, trial_id: str, trial_config: dict) -> str | None:
        """The trial's run id: from the map, else the run an earlier create left (``trial_id`` tag under the parent),
        else a new run with the trial's full config as params. Exactly one run per trial. None only for a trial
        without a config (Ray's record of a trial that never reported) and no run yet: nothing to record."""
        run_id = m.run_of(trial_id)
        if run_id is not None:
            return run_id
        self._ensure_parent(client, m)
        found = _find_runs(client, self.experiment_id,
                           f"tags.trial_id = '{trial_id}' and tags.`mlflow.parentRunId` = '{m.parent}'")
        if not found and not trial_config:
            return None
        config = trial_run_config(trial_config).to_dict() if trial_config else None
        params = [Param(k, _param_text(v)) for k, v in sorted(flatten(config).items())] if config else []
        if found:
            run_id, running = found[0].info.run_id, found[0].info.status == "RUNNING"
            params = [p for p in params if p.key not in found[0].data.params]
        else:
            tags = {"mlflow.parentRunId": m.parent, "trial_id": trial_id, "sweep": self.sweep_name,
                    "method": config["method"]["name"], "dataset": config["dataset"]["source"],
                    "searcher": self.sweep_tags.get("searcher", ""), "stage": self.sweep_tags.get("stage", "search"),
                    "searched": ",".join(sorted(searched(trial_config)))}
            run = client.create_run(self.experiment_id, run_name=trial_run_name(trial_id, self.sweep_name),
                                    tags=tags)
            run_id, running = run.info.run_id, True
        for i in range(0, len(params), _BATCH_PARAMS):
            client.log_batch(run_id, params=params[i:i + _BATCH_PARAMS])
        m.add_trial(trial_id, run_id)
        if running:
            m.mark_open(trial_id)
        m.save()
        return run_id

    def _open_trial(self, client: MlflowClient, m: RunMap, trial_id: str, trial_config: dict) -> None:
        """The trial's run marked RUNNING: created on first sight, the same run after a resume (its name loses the
        state of the session that ended it)."""
        run_id = self._trial_run(client, m, trial_id, trial_config)
        if not m.is_open(trial_id):
            client.update_run(run_id, status="RUNNING", name=trial_run_name(trial_id, self.sweep_name))
            m.mark_open(trial_id)
            m.save()

    def _log_result(self, client: MlflowClient, m: RunMap, trial_id: str, trial_config: dict, records: dict) -> None:
        client.log_batch(self._trial_run(client, m, trial_id, trial_config), **records)

    def _log_artifacts(self, client: MlflowClient, m: RunMap, trial_id: str, trial_config: dict, checkpoint,
                       step: int) -> None:
        run_id = self._trial_run(client, m, trial_id, trial_config)
        with checkpoint.as_directory() as folder:  # gone (num_to_keep) after a long outage: a failed write, skipped
            artifacts = Path(folder) / reporting.ARTIFACTS_DIR
            if artifacts.is_dir():
                client.log_artifacts(run_id, str(artifacts), artifact_path=f"eval/step_{step:06d}")

    def _close_trial(self, client: MlflowClient, m: RunMap, trial_id: str, trial_config: dict, state: str) -> None:
        run_id = self._trial_run(client, m, trial_id, trial_config)
        end_run(client, run_id, trial_run_name(trial_id, self.sweep_name, state), state)
        if m.mark_closed(trial_id):
            m.save()

    def _end_sweep(self, client: MlflowClient, m: RunMap) -> None:
        terminate_open_runs(client, m, "FINISHED")
        m.save()

    def _sync_trial(self, client: MlflowClient, m: RunMap, trial_id: str, trial_config: dict, rows: list[dict],
                    state: str, metric: str) -> int:
        run_id = self._trial_run(client, m, trial_id, trial_config)
        if run_id is None:
            return 0
        logged = {x.step for x in client.get_metric_history(run_id, metric)}
        written = 0
        for row in rows:
            step = row.get(reporting.STEP)
            if step == step and step is not None and int(step) not in logged and metric in row:  # not NaN
                client.log_batch(run_id, **result_records(row))
                logged.add(int(step))
                written += 1
        run, name = client.get_run(run_id), trial_run_name(trial_id, self.sweep_name, state)
        if run.info.status == "RUNNING" or run.data.tags.get("final_state") != state or run.info.run_name != name:
            end_run(client, run_id, name, state)
            written += 1
        if m.mark_closed(trial_id):
            m.save()
        return written

    def _end_parent(self, client: MlflowClient, m: RunMap, parent_status: str) -> int:
        client.set_terminated(m.parent, parent_status)
        m.save()
        return 0


def _find_runs(client: MlflowClient, experiment_id: str, filter_string: str) -> list:
    """Runs matching ``filter_string``, oldest first (the one to keep if an older version made duplicates)."""
    return client.search_runs([experiment_id], filter_string=filter_string, run_view_type=ViewType.ACTIVE_ONLY,
                              max_results=10, order_by=["attributes.start_time ASC"])


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


def load_run_map(path: Path) -> RunMap:
    """The sweep's ``RunMap`` as saved (``load_run_map(p)["parent"]`` / ``.parent``: the parent run id or None)."""
    return RunMap.load(path)


def save_run_map(path: Path, run_map: RunMap | dict) -> None:
    """Atomic write of a run map (a ``RunMap`` or its dict form) to ``path``."""
    RunMap(path, run_map.to_dict() if isinstance(run_map, RunMap) else run_map).save()


def system_tags() -> dict[str, str]:
    """The tags MLflow's fluent API sets on a run (source, user, git commit), resolved in the driver: the client
    API used here sets none of them."""
    return {k: str(v) for k, v in resolve_tags().items() if k.startswith("mlflow.") and v is not None}


def sweep_params(space) -> list[Param]:
    """The parent run's params: the base run config (a searched key shows its distribution instead of the base
    value no trial trains with) and the search settings."""
    searched_keys = {d.key: d.describe().split(": ", 1)[1] for d in space.params}
    values = {**flatten(space.run), **searched_keys}
    values.update({f"search.{k}": v for k, v in vars(space.search).items() if k != "budget"})
    values.update({f"search.budget.{k}": v for k, v in space.search.budget.to_dict().items()})
    values.update({f"resources.{k}": v for k, v in vars(space.resources).items()})
    return [Param(k, str(v)[:_PARAM_CHARS]) for k, v in sorted(values.items())]


def record_sweep(tracking_uri: str, parent_run_id: str, space, summary: dict, files: list[Path]) -> int:
    """The sweep's parent run carries the sweep (issue #16): params (base config, searched distributions, search
    settings), the best trial's id and metrics, trial counts, and the sweep's files and plots as artifacts.
    Params already logged (an earlier session of the sweep) are not logged again: MLflow refuses a changed param.
    Returns the number of artifacts logged."""
    client = MlflowClient(tracking_uri)
    have = client.get_run(parent_run_id).data.params
    params = [p for p in sweep_params(space) if p.key not in have]
    for i in range(0, len(params), _BATCH_PARAMS):
        client.log_batch(parent_run_id, params=params[i:i + _BATCH_PARAMS])
    step = len(summary.get("sessions", [])) or 1
    stamp = int(time.time() * 1000)
    metrics = {f"trials_{state}": n for state, n in summary["states"].items()}
    metrics.update(total_steps=summary["total_steps"], total_steps_trained=summary["total_steps_trained"],
                   wall_seconds=summary["wall_seconds"])
    tags = {"status": summary["status"], "budget_exhausted": str(summary["budget"]["exhausted"]).lower()}
    best = summary.get("best")
    confirmed = (summary.get("confirmation") or {}).get("configs")
    if confirmed:  # the winner's mean and 95 % half-width of every metric; the sweep's own best stays as search_
        for name, stats in confirmed[0]["metrics"].items():
            metrics.update({f"confirmed_{name}_mean": stats["mean"], f"confirmed_{name}_ci95": stats["ci95"]})
        metrics["confirmation_steps_trained"] = summary["confirmation"]["steps_trained"]
        tags.update(confirmed_trial_id=confirmed[0]["origin_trial"],
                    confirmation_seeds=" ".join(map(str, summary["confirmation"]["seeds"])))
    if best:
        metrics.update({f"best_{k}": v for k, v in best["metrics"].items()})
        tags.update(best_trial_id=best["trial_id"], best_state=best["state"], best_steps=str(best["steps"]),
                    best_config=json.dumps(best["config"], sort_keys=True)[:_PARAM_CHARS])
    client.log_batch(parent_run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in sorted(metrics.items())],
                     tags=[RunTag(k, v) for k, v in tags.items()])
    logged = 0
    for path in files:
        path = Path(path)
        if path.is_file():
            client.log_artifact(parent_run_id, str(path), artifact_path="sweep" if path.parent.name != "plots"
                                else "sweep/plots")
            logged += 1
    return logged


def end_run(client: MlflowClient, run_id: str, name: str, state: str) -> None:
    """Tag, rename, then terminate: a run left RUNNING by a failure in between is redone by ``sync``."""
    client.log_batch(run_id, tags=[RunTag("final_state", state)])
    client.update_run(run_id, name=name)
    client.set_terminated(run_id, RUN_STATUS[state])


def terminate_open_runs(client: MlflowClient, run_map: RunMap, parent_status: str) -> None:
    """Trial runs still open become KILLED (tag final_state=interrupted, named so); the parent gets
    ``parent_status``. The sweep's name comes from the run's own ``sweep`` tag (``close_sweep_runs`` lacks it)."""
    for trial_id in run_map.open_trials():
        run_id = run_map.run_of(trial_id)
        sweep_name = client.get_run(run_id).data.tags.get("sweep", "")
        end_run(client, run_id, trial_run_name(trial_id, sweep_name, reporting.INTERRUPTED), reporting.INTERRUPTED)
        run_map.mark_closed(trial_id)
    if run_map.parent is not None:
        client.set_terminated(run_map.parent, parent_status)


def close_sweep_runs(tracking_uri: str, run_map_path: Path, parent_status: str) -> None:
    """The driver's ``finally``: no run of this sweep stays RUNNING, whatever ended the sweep. Through the sweep's
    writer when one is live (after what it has queued; TimeoutError when the store does not answer), else directly."""
    store = _sweep_store(tracking_uri, run_map_path, create=False)
    if store is not None:
        def close_all(client):
            if store.run_map.parent is not None:
                terminate_open_runs(client, store.run_map, parent_status)
                store.run_map.save()

        task = store.writer.submit(ESSENTIAL, "close sweep runs", close_all)
        store.writer.wait([task], SYNC_STALL_S)
        if task.error is not None:
            raise task.error
        return
    run_map = RunMap.load(run_map_path)
    if run_map.parent is None:
        return
    terminate_open_runs(MlflowClient(tracking_uri), run_map, parent_status)
    run_map.save()


def _param_text(value) -> str:
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)
