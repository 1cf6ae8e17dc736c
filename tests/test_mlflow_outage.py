"""MLflow writes never block trial scheduling (issue #12, item 4).

Unit level, against real MLflow stores (sqlite files, a port with no server behind it), no mocks: the callback's hooks
only enqueue; ``flush`` writes everything; run creation is idempotent (a create whose answer was lost leaves a run that
is found again, not duplicated); a full queue drops the oldest result writes but never a creation or termination, and
``sync`` fills what was dropped from Ray's records; an unreachable server with MLflow's default retries costs the
hooks nothing and prints one warning.

End to end (slow): a real ``mlflow server`` is stopped after the first report of a real sweep (the CLI as a
subprocess) under MLflow's DEFAULT retry settings (7 retries with backoff: ~250 s per call), Ray keeps recording
reports while it is down, the server comes back on the same port and store, and the sweep ends with one warning
line each way, one run per trial, none RUNNING and every reported step in MLflow.
"""
from __future__ import annotations

import pickle
import re
import shutil
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from ray.tune import Result
from ray.tune.experiment import Trial

from helpers_sweep import (MlflowServer, cli_args, free_port, kill_leftovers, kill_tree, live_results, mlflow_runs,
                           short_tmpdir, space_document, split_runs, start, sweep_env, tail, wait_until, write_space)
from trainables import reporting
from trainables.mlflow_logging import MlflowSweepCallback, RunMap, load_run_map, prepare_store
from trainables.mlflow_writer import ESSENTIAL, RESULT, STALL_S, MlflowWriter

RUN = {"method": {"name": "cbgan", "lambda": 7.5}, "dataset": {"source": "digits", "resolution": 8},
       "train": {"steps": 50, "eval_every": 10}, "eval": {"metrics": ["intra_fid"]}}
RETRY_ENV = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
             "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER", "MLFLOW_HTTP_REQUEST_TIMEOUT")
HOOK_BUDGET_S = 0.2  # what a hook may take (it only enqueues); the old synchronous hooks took ~250 s in an outage


@pytest.fixture
def default_retries(monkeypatch):
    """MLflow's own default retry settings, whatever the shell exported."""
    for name in RETRY_ENV:
        monkeypatch.delenv(name, raising=False)


def sqlite_store(tmp_path: Path) -> tuple[str, str]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return uri, prepare_store(uri, "outage-unit", tmp_path / "mlartifacts")


def make_trial(trial_id: str = "t0001") -> Trial:
    return Trial("reporting_trainable", config={"run": RUN, "method.lambda": 3.0}, trial_id=trial_id, stub=True)


def report(step: int, final: bool = False) -> dict:
    return {"intra_fid": 100.0 / step, reporting.STEP: step, "timestamp": time.time(),
            reporting.STATE: reporting.COMPLETED if final else reporting.RUNNING}


def nested_runs(uri: str) -> tuple[list, list]:
    return split_runs(mlflow_runs(uri, "outage-unit"))


def steps(uri: str, run_id: str) -> list[int]:
    return sorted(m.step for m in MlflowClient(uri).get_metric_history(run_id, "intra_fid"))


def timed(fn, *args) -> float:
    start_time = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start_time


def test_hooks_enqueue_flush_writes_and_a_lost_create_is_found_again(tmp_path, default_retries):
    uri, experiment_id = sqlite_store(tmp_path)
    path = tmp_path / "runs.json"
    callback = MlflowSweepCallback(uri, experiment_id, "unit", path, {"searcher": "grid"})
    trial = make_trial()
    durations = [timed(callback.setup), timed(callback.on_trial_start, 0, [trial], trial)]
    for step in (10, 20, 30):
        durations.append(timed(callback.on_trial_result, 0, [trial], trial, report(step)))
    assert max(durations) < HOOK_BUDGET_S, durations
    assert callback.flush(30) and callback.pending == 0
    parents, nested = nested_runs(uri)
    assert len(parents) == 1 and len(nested) == 1
    run = nested[0]
    assert run.info.status == "RUNNING" and run.data.tags["trial_id"] == "t0001"
    assert run.data.params["method.lambda"] == "3.0" and steps(uri, run.info.run_id) == [10, 20, 30]

    # Pickled (as in tuner.pkl) with a live writer thread: only settings travel.
    state = callback.__getstate__()
    assert set(state) == {"tracking_uri", "experiment_id", "sweep_name", "run_map_path", "sweep_tags", "queue_size"}
    blob = pickle.dumps(callback)
    assert callback.close(10)

    # What a driver killed after the creates, before their run ids were saved, leaves (and what a create whose
    # answer was lost leaves): the runs exist, the map does not know them. Only the parent's lookup key survives.
    RunMap(path, {"sweep_key": load_run_map(path)["sweep_key"]}).save()
    restored = pickle.loads(blob)  # the writer, its thread and client restart lazily
    trial.run_metadata.last_result = report(50, final=True)
    durations = [timed(restored.setup), timed(restored.on_trial_restore, 0, [trial], trial),
                 timed(restored.on_trial_result, 0, [trial], trial, report(40)),
                 timed(restored.on_trial_result, 0, [trial], trial, report(50, final=True)),
                 timed(restored.on_trial_complete, 0, [trial], trial)]
    assert max(durations) < HOOK_BUDGET_S, durations
    restored.on_experiment_end(trials=[trial])  # nothing left to schedule: it may wait for the writes
    assert restored.flush(30)
    parents, nested = nested_runs(uri)
    assert [p.info.run_id for p in parents] == [run.data.tags["mlflow.parentRunId"]], "a second parent run"
    assert [r.info.run_id for r in nested] == [run.info.run_id], "a second run for the same trial"
    assert nested[0].info.status == "FINISHED" and nested[0].data.tags["final_state"] == "completed"
    assert parents[0].info.status == "FINISHED"
    assert steps(uri, run.info.run_id) == [10, 20, 30, 40, 50]
    mapping = load_run_map(path)
    assert mapping.parent == parents[0].info.run_id and mapping.run_of("t0001") == run.info.run_id
    assert mapping.open_trials() == []
    restored.close(10)


def test_a_full_queue_drops_the_oldest_results_never_a_creation_or_termination(tmp_path):
    uri, experiment_id = sqlite_store(tmp_path)
    callback = MlflowSweepCallback(uri, experiment_id, "full", tmp_path / "runs.json", {}, queue_size=4)
    trial = make_trial("t0002")
    gate = threading.Event()
    writer = callback.writer
    writer.submit(ESSENTIAL, "gate", lambda client: gate.wait(30))  # holds the writer: a slow store
    wait_until(lambda: writer.pending == 1 and not writer._queue, 10, "the gate in flight", interval=0.01)
    callback.setup()
    callback.on_trial_start(0, [trial], trial)
    for step in (10, 20, 30, 40):
        callback.on_trial_result(0, [trial], trial, report(step))
    trial.run_metadata.last_result = report(50, final=True)
    callback.on_trial_result(0, [trial], trial, report(50, final=True))
    callback.on_trial_complete(0, [trial], trial)
    # queue of 4: [setup, start, r10, r20] is full; each later write evicted the oldest result
    assert callback.dropped == {"result": 4, "artifact": 0}, callback.dropped
    gate.set()
    assert callback.flush(30)
    _, nested = nested_runs(uri)
    assert len(nested) == 1 and nested[0].info.status == "FINISHED", "creation or termination was dropped"
    assert steps(uri, nested[0].info.run_id) == [50]

    # The end-of-sweep sync fills the dropped steps from Ray's record of the trial.
    rows = [report(step, final=step == 50) for step in (10, 20, 30, 40, 50)]
    result = Result(metrics={**rows[-1], "config": trial.config, "done": True}, checkpoint=None, error=None,
                    path=str(tmp_path / "ray" / "trial_t0002"), metrics_dataframe=pd.DataFrame(rows))
    assert callback.sync([result], "intra_fid") == 4
    assert steps(uri, nested[0].info.run_id) == [10, 20, 30, 40, 50]
    assert callback.sync([result], "intra_fid") == 0  # idempotent
    parents, _ = nested_runs(uri)
    assert [p.info.status for p in parents] == ["FINISHED"]
    callback.close(10)


def test_writer_drop_order_and_bound():
    writer = MlflowWriter("sqlite:///unused.db", lambda: None, maxsize=2)
    gate = threading.Event()
    writer.submit(ESSENTIAL, "gate", lambda client: gate.wait(30))
    wait_until(lambda: writer.pending == 1 and not writer._queue, 10, "the gate in flight", interval=0.01)
    kept = [writer.submit(ESSENTIAL, f"create {i}", lambda client: None) for i in range(3)]
    results = [writer.submit(RESULT, f"result {i}", lambda client: None) for i in range(2)]
    assert all(r.dropped for r in results) and not any(k.dropped for k in kept)  # only essentials: kept all
    assert writer.pending == 4 and writer.dropped["result"] == 2
    gate.set()
    assert writer.flush(10) and writer.close(5)


def test_an_unreachable_server_costs_the_hooks_nothing_and_warns_once(tmp_path, default_retries):
    """No server behind the port, MLflow's default retries: each write would hang ~250 s in MLflow's retries. The
    writer takes that on its own thread; submitting stays instant; one warning, with the number pending."""
    lines: list[str] = []
    uri = f"http://127.0.0.1:{free_port()}"
    writer = MlflowWriter(uri, lambda: MlflowClient(uri), stall_s=1.0, probe_s=0.5, log=lines.append)
    durations = [timed(writer.submit, RESULT, f"result {i}", lambda client: client.get_experiment("0"))
                 for i in range(200)]
    assert max(durations) < 0.05, max(durations)
    wait_until(lambda: lines, 15, "the unreachable warning")
    time.sleep(2)  # more stalled seconds: still one line
    assert len(lines) == 1 and "is unreachable" in lines[0] and "200 write(s) pending" in lines[0], lines
    assert writer.is_down and writer.pending == 200
    assert not writer.close(0.5)  # gives up; the thread stops after MLflow's retries of the write in flight


def test_callback_hooks_return_at_once_against_a_dead_server(tmp_path, default_retries):
    """Ray's hooks, called as Ray calls them, with no server behind the tracking URI (the callback API only, so the
    same test measures the synchronous callback of before: it blocked ~250 s in the first hook)."""
    uri = f"http://127.0.0.1:{free_port()}"
    callback = MlflowSweepCallback(uri, "0", "dead", tmp_path / "runs.json", {})
    trial = make_trial("t0003")
    timings: list[tuple[str, float]] = []

    def drive():
        timings.append(("setup", timed(callback.setup)))
        timings.append(("on_trial_start", timed(callback.on_trial_start, 0, [trial], trial)))
        for step in (10, 20, 30):
            timings.append(("on_trial_result", timed(callback.on_trial_result, 0, [trial], trial, report(step))))

    driver = threading.Thread(target=drive, daemon=True)  # daemon: a hook that hangs must not hang pytest
    driver.start()
    driver.join(timeout=10)
    assert not driver.is_alive(), f"a hook blocked the driver for over 10 s (done: {timings})"
    assert max(t for _, t in timings) < HOOK_BUDGET_S, timings
    assert callback.pending == 5
    callback.close(0.5)


# ----------------------------------------------------------------------------------------------------------------
# End to end: a real server stopped and restarted mid-sweep, MLflow's default retry environment
# ----------------------------------------------------------------------------------------------------------------
OUTAGE_REPORTS = 3  # reports Ray must record while the server is down: scheduling went on
MIN_OUTAGE_S = STALL_S + 5  # the writer calls the store unreachable after a write hung STALL_S in MLflow's retries
STEPS, EVAL_EVERY = 100, 20


@pytest.mark.slow
def test_sweep_goes_on_through_an_outage_under_default_retries(cache_dir):
    tmp = short_tmpdir("imbo")
    env = sweep_env(Path(cache_dir), tmp / "ray")
    for name in RETRY_ENV:
        env.pop(name, None)  # MLflow's defaults: 7 retries, backoff factor 2 (sweep_env drops MLFLOW_* already)
    run = space_document()["run"]
    run["train"].update(steps=STEPS, eval_every=EVAL_EVERY)
    space = write_space(tmp / "outage.yaml", name="outage", run=run, search={"num_samples": 2, "scheduler": "fifo"},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1})
    results = tmp / "results"
    server = MlflowServer(env, tmp / "server").start()
    try:
        proc = start(cli_args(space, results, "--mlflow-uri", server.uri, "--experiment", "outage"), env)
        try:
            def reported() -> int:
                return sum(1 for trials in live_results(env, "outage").values() for rows in trials.values()
                           for r in rows if "step" in r)

            wait_until(reported, 300, "a first report", interval=0.2, proc=proc)
            server.stop()
            down_at, before = time.monotonic(), reported()
            # Ray's own records keep growing while the store is down: the driver schedules and processes results.
            # (Before the fix the driver hung in on_trial_result inside MLflow's retries: no new row for ~250 s.)
            wait_until(lambda: reported() >= before + OUTAGE_REPORTS, 120,
                       f"{OUTAGE_REPORTS} more reports while MLflow is down", interval=0.2, proc=proc)
            outage_reports = reported() - before
            time.sleep(max(0.0, MIN_OUTAGE_S - (time.monotonic() - down_at)))  # long enough to be noticed
            outage_s = time.monotonic() - down_at
            server.start()  # same port, same sqlite store
            out, _ = proc.communicate(timeout=300)
        finally:
            kill_tree(proc, env)
        assert proc.returncode == 0, tail(out)
        down_lines = [line for line in out.splitlines() if "is unreachable" in line and server.uri in line]
        back_lines = [line for line in out.splitlines() if re.search(r"MLflow store \S+ is back after", line)]
        assert len(down_lines) == 1 and re.search(r"\d+ write\(s\) pending", down_lines[0]), tail(out)
        assert len(back_lines) == 1 and re.search(r"writing \d+ pending write\(s\)", back_lines[0]), tail(out)
        assert out.index(down_lines[0]) < out.index(back_lines[0])
        print(f"outage {outage_s:.1f} s, {outage_reports} reports recorded by Ray meanwhile; {down_lines[0]!r}; "
              f"{back_lines[0]!r}")

        parents, nested = split_runs(mlflow_runs(server.uri, "outage"))
        by_trial: dict[str, list] = {}
        for r in nested:
            by_trial.setdefault(r.data.tags.get("trial_id"), []).append(r)
        reported_steps: dict[str, set[int]] = {}
        for trials in live_results(env, "outage").values():
            for tid, rows in trials.items():
                reported_steps.setdefault(tid, set()).update(int(r["step"]) for r in rows if "step" in r)
        assert len(parents) == 1 and parents[0].info.status == "FINISHED", [p.info.status for p in parents]
        assert sorted(by_trial) == sorted(reported_steps) and len(reported_steps) == 2, sorted(by_trial)
        assert all(len(runs) == 1 for runs in by_trial.values()), {t: len(r) for t, r in by_trial.items()}
        client = MlflowClient(server.uri)
        for tid, [run_] in by_trial.items():
            assert run_.info.status == "FINISHED" and run_.data.tags.get("final_state") == "completed", run_.data.tags
            logged = {m.step for m in client.get_metric_history(run_.info.run_id, "intra_fid")}
            assert reported_steps[tid] <= logged, f"trial {tid}: reported {sorted(reported_steps[tid])}, MLflow " \
                                                  f"has {sorted(logged)}"
    finally:
        server.stop()
        kill_leftovers(env)
        shutil.rmtree(tmp, ignore_errors=True)

