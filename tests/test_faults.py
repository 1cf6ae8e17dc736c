"""Faults a sweep must survive (issue #7), each on a real sweep: the CLI as a subprocess, real Ray, Optuna, MLflow.

- the driver SIGKILLed mid-sweep, then ``--resume``: finished trials stay finished and are not re-run, unfinished
  ones continue from their last checkpoint, MLflow ends with one run per trial (none RUNNING), Optuna holds no
  duplicates, and ASHA decides as if the sweep had never stopped;
- a truncated checkpoint on resume: the previous checkpoint is used, or the error names the file;
- a trial process SIGKILLed mid-training: the trial restarts from its last checkpoint and ends correctly;
- a diverging trial: state ``diverged`` with the reason in MLflow, the searcher told it was bad, the sweep goes on;
- the MLflow store unreachable at start (clear error before any trial) or lost mid-sweep (no silent gap).
"""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from helpers_sweep import (MlflowServer, cli_args, kill_tree, live_results, mlflow_runs, optuna_trials,
                           private_workdir, ray_results, read_json, run_cli, space_document, split_runs, start,
                           steps_after_resume, tail, wait_until, write_space)

pytestmark = pytest.mark.slow

FINAL_STATES = {"completed", "stopped_by_asha", "diverged", "error"}
STEPS, EVAL_EVERY = 60, 20
KILL_STEPS = 80  # the kill scenario's budget: ASHA rung at 40, completion at 80
CORRUPT_STEPS = 140  # long enough to be killed mid-way after two checkpoints


@pytest.fixture(scope="module")
def workdir(cache_dir):
    with private_workdir(cache_dir, "imbf") as folder_and_env:
        yield folder_and_env


def sqlite_uri(results: Path) -> str:
    return f"sqlite:///{results / 'mlflow.db'}"


def trial_runs(uri: str, experiment: str) -> dict[str, object]:
    """Nested MLflow runs by their Ray trial id (the sweep's ``trial_id`` tag)."""
    _, nested = split_runs(mlflow_runs(uri, experiment))
    return {r.data.tags.get("trial_id"): r for r in nested}


def finished_trials(uri: str, experiment: str) -> set[str]:
    try:
        return {tid for tid, r in trial_runs(uri, experiment).items() if r.info.status != "RUNNING"}
    except Exception:  # the driver may hold the sqlite write lock for a moment
        return set()


def steps_of(rows: list[dict]) -> list[int]:
    return [int(r["step"]) for r in rows if "step" in r]


# ----------------------------------------------------------------------------------------------------------------
# Driver SIGKILL + --resume
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def killed_and_resumed(workdir):
    """4 trials of 80 steps, one at a time (so the order of reports is known exactly), ASHA's only rung at 40.
    SIGKILL the whole driver tree as soon as the second trial reported step 20: the first trial has finished, the
    second is certainly running (no rung before 40), two trials have not started. Then ``--resume``."""
    tmp, env = workdir
    results = tmp / "kill"
    run = space_document()["run"]
    run["train"].update(steps=KILL_STEPS)
    space = write_space(tmp / "kill.yaml", name="killed", run=run,
                        search={"num_samples": 4, "scheduler": {"asha": {"grace_period": 40, "reduction_factor": 2}}},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1})
    args = cli_args(space, results, "--experiment", "killed")
    uri, sweep_dir = sqlite_uri(results), results / "killed"
    proc = start(args, env)
    try:
        def second_trial_reported():
            [trials] = live_results(env, "killed").values() or [{}]
            return len(trials) >= 2 and any(steps_of(rows) == [EVAL_EVERY] for rows in trials.values())

        wait_until(second_trial_reported, 300, "the second trial's first report", interval=0.1, proc=proc)
    finally:
        kill_tree(proc, env)
    killed_output = proc.stdout.read()
    [(old_session, before)] = live_results(env, "killed").items()
    runs = trial_runs(uri, "killed")
    resumed = run_cli(args + ["--resume"], env, timeout=300)
    after = {k: v for k, v in live_results(env, "killed").items() if k != old_session}
    return {"before": before, "after": after.popitem()[1] if after else {}, "proc": resumed, "uri": uri,
            "finished": {t for t, r in runs.items() if r.info.status != "RUNNING"},
            "running": {t for t, r in runs.items() if r.info.status == "RUNNING"},
            "sweep_dir": sweep_dir, "killed_output": killed_output}


def test_kill_left_a_finished_and_a_running_trial(killed_and_resumed):
    """The scenario itself: without both kinds of trial at the kill, the tests below would check nothing."""
    assert len(killed_and_resumed["finished"]) == 1 and len(killed_and_resumed["running"]) == 1, killed_and_resumed
    assert set(killed_and_resumed["before"]) == killed_and_resumed["finished"] | killed_and_resumed["running"]


def test_resume_finishes_the_sweep(killed_and_resumed):
    proc = killed_and_resumed["proc"]
    assert proc.returncode == 0, tail(proc.stdout)
    summary = read_json(killed_and_resumed["sweep_dir"] / "summary.json")
    assert len(summary["trials"]) == 4, summary["trials"]
    assert {t["state"] for t in summary["trials"]} <= {"completed", "stopped_by_asha"}, summary["trials"]


def test_finished_trials_are_not_rerun(killed_and_resumed):
    for trial_id in killed_and_resumed["finished"]:
        rows = killed_and_resumed["after"].get(trial_id, [])
        assert not rows, f"finished trial {trial_id} reported steps {steps_of(rows)} again after --resume"


def test_unfinished_trials_continue_from_their_last_checkpoint(killed_and_resumed):
    before, after = killed_and_resumed["before"], killed_and_resumed["after"]
    for trial_id in killed_and_resumed["running"]:
        old = steps_of(before[trial_id])
        new = steps_after_resume(before[trial_id], after.get(trial_id, []))
        assert new, f"trial {trial_id} did not continue after --resume"
        # old[-1] again: its checkpoint was newer than Ray's saved state, so the resumed trial reports it again
        assert new[0] in (old[-1], old[-1] + EVAL_EVERY), (
            f"trial {trial_id} reported steps {old} before the kill, then {new}: not resumed from step {old[-1]}")


def test_mlflow_has_one_closed_run_per_trial(killed_and_resumed):
    from mlflow.tracking import MlflowClient

    uri = killed_and_resumed["uri"]
    parents, nested = split_runs(mlflow_runs(uri, "killed"))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [(p.info.run_id, p.info.status)
                                                                         for p in parents]
    reported = {**killed_and_resumed["before"]}
    for trial_id, rows in killed_and_resumed["after"].items():
        reported[trial_id] = reported.get(trial_id, []) + rows
    ids = [r.data.tags.get("trial_id") for r in nested]
    assert sorted(ids) == sorted(reported), ids
    for run in nested:
        assert run.info.status != "RUNNING", run.data.tags
        assert run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
        assert run.data.tags.get("final_state") in {"completed", "stopped_by_asha"}, run.data.tags
        history = MlflowClient(uri).get_metric_history(run.info.run_id, "intra_fid")
        logged = sorted({m.step for m in history})
        # a trial restarted from a checkpoint Ray had not recorded reports that step again (trainables/trial.py), and
        # MLflow may then hold that step twice: always with the same value (the same report, never a new number)
        assert logged == sorted(set(steps_of(reported[run.data.tags["trial_id"]]))), (run.data.tags["trial_id"],
                                                                                      logged)
        values = {}
        for m in history:
            assert values.setdefault(m.step, m.value) == m.value, (run.data.tags["trial_id"], m.step)


def test_optuna_study_has_no_duplicates(killed_and_resumed):
    trials = optuna_trials(killed_and_resumed["sweep_dir"] / "optuna.db")
    ray_ids = [t.user_attrs.get("ray_trial_id") for t in trials]
    expected = set(killed_and_resumed["before"]) | set(killed_and_resumed["after"])
    assert sorted(ray_ids, key=str) == sorted(expected), [(t.number, t.state, t.user_attrs) for t in trials]
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]


def test_asha_decides_as_if_never_interrupted(killed_and_resumed):
    """Replay every report, in the order it happened, through a fresh ASHA: same stops as the resumed sweep.

    Trials ran one at a time, so the order is: trials by their first report, each trial's reports by step."""
    from ray.tune.schedulers import AsyncHyperBandScheduler
    from ray.tune.schedulers.trial_scheduler import TrialScheduler

    sessions = [killed_and_resumed["before"], killed_and_resumed["after"]]
    rows = [(min(r["timestamp"] for r in trial_rows), tid, int(r["step"]), float(r["intra_fid"]))
            for session in sessions for tid, trial_rows in session.items() for r in trial_rows]
    first = {}
    for stamp, tid, _, _ in rows:
        first[tid] = min(stamp, first.get(tid, stamp))
    rows = sorted((first[tid], tid, step, value) for _, tid, step, value in rows)
    asha = AsyncHyperBandScheduler(time_attr="step", metric="intra_fid", mode="min", max_t=KILL_STEPS,
                                   grace_period=40, reduction_factor=2)
    bracket = asha._brackets[0]
    expected_stop: dict[str, int] = {}
    seen = set()
    for _, tid, step, value in rows:
        if (tid, step) in seen or tid in expected_stop:
            continue
        seen.add((tid, step))
        if step < KILL_STEPS and bracket.on_result(_Trial(tid), step, -value) == TrialScheduler.STOP:
            expected_stop[tid] = step
    summary = read_json(killed_and_resumed["sweep_dir"] / "summary.json")
    actual_stop = {t["trial_id"]: t["steps"] for t in summary["trials"] if t["state"] == "stopped_by_asha"}
    assert actual_stop == expected_stop, f"ASHA stops after resume {actual_stop} != uninterrupted ASHA {expected_stop}"


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


# ----------------------------------------------------------------------------------------------------------------
# Truncated checkpoint on resume
# ----------------------------------------------------------------------------------------------------------------
def test_truncated_checkpoint_on_resume(workdir):
    """Kill after two checkpoints (and after Ray recorded the newer one in its experiment state, so that the resume
    reads it), truncate the newer one, resume: fall back to the older one, or fail naming the file."""
    tmp, env = workdir
    results = tmp / "corrupt"
    run = space_document()["run"]
    run["train"].update(steps=CORRUPT_STEPS)
    space = write_space(tmp / "corrupt.yaml", name="corrupt", run=run, space={},
                        search={"num_samples": 1, "scheduler": "fifo"})
    args = cli_args(space, results, "--experiment", "corrupt")
    sweep_dir = results / "corrupt"
    proc = start(args, env)
    try:
        def recorded_two_checkpoints():
            checkpoints = sorted(sweep_dir.rglob("checkpoint.pt")) if sweep_dir.exists() else []
            states = sorted(sweep_dir.glob("experiment_state-*.json")) if sweep_dir.exists() else []
            return (len(checkpoints) >= 2 and states
                    and states[-1].stat().st_mtime > max(c.stat().st_mtime for c in checkpoints) + 0.01)

        wait_until(recorded_two_checkpoints, 300, "two checkpoints known to Ray's experiment state", interval=0.2,
                   proc=proc)
    finally:
        kill_tree(proc, env)
    newest = max(sweep_dir.rglob("checkpoint.pt"), key=lambda p: p.parent.name)
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 3])
    [(old_session, old_trials)] = live_results(env, "corrupt").items()
    [(trial_id, old_rows)] = old_trials.items()
    old = steps_of(old_rows)
    resumed = run_cli(args + ["--resume"], env, timeout=300)
    later = [v for k, v in live_results(env, "corrupt").items() if k != old_session]
    new = steps_of(later[0].get(trial_id, [])) if later else []
    fell_back = resumed.returncode == 0 and new and new[-1] == CORRUPT_STEPS
    named = str(newest) in resumed.stdout
    assert fell_back or named, f"neither a fall-back nor an error naming {newest}:\n{tail(resumed.stdout)}"
    if fell_back:
        assert new[0] <= old[-1], f"steps {old}, then {new} after the resume: was the truncated checkpoint used?"


# ----------------------------------------------------------------------------------------------------------------
# Trial process killed, and a diverging trial, in one sweep
# ----------------------------------------------------------------------------------------------------------------
HEALTHY_LR, DIVERGING_LR = 2e-4, 1e30  # Adam steps of ~1e30: NaN losses at step 1 (1e39 overflows Adam itself)


def covering_seed(choices: list, n: int) -> int:
    """The smallest RandomSampler seed whose first ``n`` draws of ``train.lr_d`` cover every choice."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for seed in range(200):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
        drawn = {study.ask().suggest_categorical("train.lr_d", choices) for _ in range(n)}
        if len(drawn) == len(choices):
            return seed
    raise AssertionError("no covering seed")


@pytest.fixture(scope="module")
def faulty_sweep(workdir):
    """3 trials, one at a time, 100 steps: ``train.lr_d`` picks a healthy or a diverging learning rate. The first
    healthy trial's worker process is SIGKILLed right after its first report."""
    tmp, env = workdir
    results = tmp / "faulty"
    choices = [HEALTHY_LR, DIVERGING_LR]
    doc_run = space_document()["run"]
    doc_run["train"].update(steps=100)
    space = write_space(tmp / "faulty.yaml", name="faulty", run=doc_run, space={"train.lr_d": {"choice": choices}},
                        search={"num_samples": 3, "scheduler": "fifo",
                                "searcher": {"optuna": {"sampler": "random", "seed": covering_seed(choices, 3)}}},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1})
    sweep_dir = results / "faulty"
    proc = start(cli_args(space, results, "--experiment", "faulty"), env)
    try:
        def first_healthy_report():
            for tid, rows in next(iter(live_results(env, "faulty").values()), {}).items():
                healthy = [r for r in rows if r.get("state") == "running"]
                if healthy and int(healthy[0]["step"]) < 100:
                    return tid, healthy[0]
            return None

        victim, row = wait_until(first_healthy_report, 300, "a healthy trial's first report", interval=0.2,
                                 proc=proc)
        os.kill(int(row["pid"]), signal.SIGKILL)
        out, _ = proc.communicate(timeout=300)
    finally:
        kill_tree(proc, env)
    return {"proc": proc, "out": out, "victim": victim, "killed_after": int(row["step"]), "sweep_dir": sweep_dir,
            "uri": sqlite_uri(results), "results": ray_results(sweep_dir)}


def test_sweep_with_faults_completes(faulty_sweep):
    assert faulty_sweep["proc"].returncode == 0, tail(faulty_sweep["out"])
    summary = read_json(faulty_sweep["sweep_dir"] / "summary.json")
    lrs = {t["trial_id"]: t["config"]["train.lr_d"] for t in summary["trials"]}
    assert set(lrs.values()) == {HEALTHY_LR, DIVERGING_LR}, lrs
    for trial in summary["trials"]:
        expected = "diverged" if trial["config"]["train.lr_d"] == DIVERGING_LR else "completed"
        assert trial["state"] == expected, trial


def test_killed_trial_restarts_from_its_checkpoint(faulty_sweep):
    steps, killed_after = steps_of(faulty_sweep["results"][faulty_sweep["victim"]]), faulty_sweep["killed_after"]
    # Every step once, in order; only the step it restarted from may come twice: when the kill beat Ray's record of
    # that checkpoint, the restarted trial reports it again so that Ray knows it (trainables/trial.py).
    repeated = [s for i, s in enumerate(steps) if s in steps[:i]]
    assert sorted(set(steps)) == list(range(EVAL_EVERY, 101, EVAL_EVERY)) and steps == sorted(steps), (
        f"trial killed after step {killed_after} reported {steps}")
    assert repeated in ([], [killed_after]), f"trial killed after step {killed_after} reported {steps}"
    pids = {r["pid"] for r in faulty_sweep["results"][faulty_sweep["victim"]]}
    assert len(pids) >= 2, "the trial was never killed (one worker process throughout)"
    run = trial_runs(faulty_sweep["uri"], "faulty")[faulty_sweep["victim"]]
    assert run.info.status == "FINISHED" and run.data.tags["final_state"] == "completed", run.data.tags


def test_divergence_is_recorded_and_the_searcher_told(faulty_sweep):
    runs = trial_runs(faulty_sweep["uri"], "faulty")
    trials = optuna_trials(faulty_sweep["sweep_dir"] / "optuna.db")
    healthy_values = [t.value for t in trials if t.params["train.lr_d"] == HEALTHY_LR]
    diverged = [t for t in trials if t.params["train.lr_d"] == DIVERGING_LR]
    assert diverged and healthy_values
    for t in diverged:
        run = runs[t.user_attrs["ray_trial_id"]]
        assert run.data.tags.get("final_state") == "diverged" and run.info.status != "RUNNING", run.data.tags
        reason = " ".join(f"{k}={v}" for k, v in run.data.tags.items() if "diverg" in k)
        assert "loss" in reason and "step" in reason, f"no reason for the divergence in MLflow tags: {run.data.tags}"
        told_bad = t.state == TrialState.FAIL or (t.state == TrialState.COMPLETE and t.value > max(healthy_values))
        assert told_bad, f"Optuna trial {t.number}: {t.state} value {t.value} vs healthy {healthy_values}"


# ----------------------------------------------------------------------------------------------------------------
# MLflow store unreachable at start / lost mid-sweep
# ----------------------------------------------------------------------------------------------------------------
def test_mlflow_unreachable_at_start(workdir):
    """A tracking server that does not answer: exit 2 naming the URI, before data, classifiers or Ray."""
    tmp, env = workdir
    results = tmp / "nomlflow"
    space = write_space(tmp / "nomlflow.yaml", name="nomlflow")
    dead = MlflowServer(env, tmp / "dead")  # a free port with no server behind it
    proc = run_cli(cli_args(space, results, "--mlflow-uri", dead.uri), env, timeout=120)
    assert proc.returncode == 2, tail(proc.stdout)
    assert dead.uri in proc.stdout and "Traceback" not in proc.stdout, tail(proc.stdout)
    assert "[classifier]" not in proc.stdout and "[annotator]" not in proc.stdout, "work started before the check"
    leftovers = sorted(p.relative_to(results) for p in results.rglob("*")) if results.exists() else []
    assert not leftovers, f"a sweep that could not reach MLflow wrote {leftovers}"


def test_mlflow_outage_mid_sweep_leaves_no_gap(workdir):
    """The tracking server dies after the first report and comes back 10 s later, with MLflow's HTTP retries off
    (an outage longer than the retry window): the sweep finishes, every report of every trial ends up in MLflow,
    every run is closed with its final state, and the console says that records were written late."""
    tmp, env = workdir
    env = {**env, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    results = tmp / "outage"
    space = write_space(tmp / "outage.yaml", name="outage", search={"num_samples": 2, "scheduler": "fifo"},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1})
    server = MlflowServer(env, tmp / "server").start()
    try:
        sweep_dir = results / "outage"
        proc = start(cli_args(space, results, "--mlflow-uri", server.uri, "--experiment", "outage"), env)
        try:
            wait_until(lambda: live_results(env, "outage"), 300, "a first report", interval=0.2, proc=proc)
            server.stop()
            time.sleep(10)
            server.start()
            out, _ = proc.communicate(timeout=300)
        finally:
            kill_tree(proc, env)
        assert proc.returncode == 0, tail(out)
        assert out.count("is unreachable") == 1 and out.count("is back after") == 1, \
            f"the outage was not reported once each way:\n{tail(out)}"
        reported = ray_results(sweep_dir)
        runs = trial_runs(server.uri, "outage")
        assert sorted(runs) == sorted(reported), (sorted(runs), sorted(reported))
        from mlflow.tracking import MlflowClient
        client = MlflowClient(server.uri)
        for trial_id, rows in reported.items():
            run = runs[trial_id]
            assert run.info.status == "FINISHED" and run.data.tags.get("final_state") == "completed", run.data.tags
            logged = sorted({m.step for m in client.get_metric_history(run.info.run_id, "intra_fid")})
            assert logged == sorted(set(steps_of(rows))), f"trial {trial_id}: MLflow has steps {logged}"
    finally:
        server.stop()
