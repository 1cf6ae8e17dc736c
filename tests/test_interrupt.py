"""Ctrl-C and SIGTERM (issue #12, item 1), and two sweeps started at once into one results folder (item 3).

Real processes and real signals: the CLI as a subprocess with real Ray, Optuna and MLflow (sqlite); SIGINT or
SIGTERM to the driver's pid while its trials run, then the ``--resume`` command the driver printed.
"""
from __future__ import annotations

import shlex
import signal
import threading
from pathlib import Path

import pytest
from optuna.trial import TrialState

from helpers_sweep import (cli_args, kill_tree, live_results, mlflow_runs, optuna_trials, private_workdir,
                           read_json, run_cli, space_document, split_runs, start, steps_after_resume, sweep_env, tail,
                           wait_until, write_space)

pytestmark = pytest.mark.slow

STEPS, EVAL_EVERY = 80, 20  # ASHA's rung at 40: at the first report (step 20) ASHA cannot have stopped anything


@pytest.fixture(scope="module")
def workdir(cache_dir):
    with private_workdir(cache_dir, "imbi") as folder_and_env:
        yield folder_and_env


def steps_of(rows: list[dict]) -> list[int]:
    return [int(r["step"]) for r in rows if "step" in r]


def interrupt_space(tmp: Path, name: str, num_samples: int = 2) -> Path:
    run = space_document()["run"]
    run["train"].update(steps=STEPS, eval_every=EVAL_EVERY)
    return write_space(tmp / f"{name}.yaml", name=name, run=run,
                       search={"num_samples": num_samples,
                               "scheduler": {"asha": {"grace_period": 40, "reduction_factor": 2}}},
                       resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 2})


def interrupt_after_first_reports(args: list[str], env: dict, experiment: str, sig: int, reports: int = 2):
    """Start the sweep, wait until ``reports`` trials reported step 20, send ``sig`` to the driver only."""
    proc = start(args, env)
    try:
        def reported():
            sessions = live_results(env, experiment)
            trials = next(iter(sessions.values()), {})
            return sum(steps_of(rows)[:1] == [EVAL_EVERY] for rows in trials.values()) >= reports

        wait_until(reported, 300, f"{reports} first reports", interval=0.1, proc=proc)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=180)
    finally:
        kill_tree(proc, env)
    [(_, before)] = live_results(env, experiment).items()
    return proc.returncode, out, before


@pytest.fixture(scope="module")
def interrupted(workdir):
    """Two trials running at once, SIGINT after both reported step 20; then the printed ``--resume`` command."""
    tmp, env = workdir
    results = tmp / "int"
    space = interrupt_space(tmp, "interrupted")
    code, out, before = interrupt_after_first_reports(cli_args(space, results), env, "interrupted", signal.SIGINT)
    sweep_dir = results / "interrupted"
    state = {"code": code, "out": out, "before": before, "dir": sweep_dir, "uri": f"sqlite:///{results / 'mlflow.db'}",
             "summary": read_json(sweep_dir / "summary.json") if (sweep_dir / "summary.json").exists() else None,
             "csv": (sweep_dir / "trials.csv").read_text() if (sweep_dir / "trials.csv").exists() else "",
             "runs": split_runs(mlflow_runs(f"sqlite:///{results / 'mlflow.db'}", "interrupted")),
             "optuna": optuna_trials(sweep_dir / "optuna.db"), "best_yaml": (sweep_dir / "best.yaml").exists()}
    last = out.strip().splitlines()[-1] if out.strip() else ""
    state["resume_line"] = last
    if last.startswith("resume: "):
        resumed = run_cli(shlex.split(last[len("resume: "):]), env, timeout=400)
        sessions = live_results(env, "interrupted")
        state.update(resumed=resumed, after=list(sessions.values())[-1] if len(sessions) > 1 else {})
    return state


def test_sigint_exits_130_and_prints_the_resume_command(interrupted):
    assert interrupted["code"] == 130, tail(interrupted["out"])
    line = interrupted["resume_line"]
    assert line.startswith("resume: ") and line.endswith("--resume"), tail(interrupted["out"])
    assert "Tuner.restore" not in interrupted["out"]


def test_interrupted_trials_are_interrupted_everywhere(interrupted):
    summary = interrupted["summary"]
    assert summary["status"] == "interrupted" and summary["best"] is None, summary
    states = {t["trial_id"]: t["state"] for t in summary["trials"]}
    assert set(states.values()) == {"interrupted"}, states  # nobody reached ASHA's rung at 40
    assert interrupted["csv"].count(",interrupted,") == len(states)
    assert not interrupted["best_yaml"], "best.yaml written from an unfinished trial"
    parents, nested = interrupted["runs"]
    assert [p.info.status for p in parents] == ["KILLED"]
    assert sorted(r.data.tags["trial_id"] for r in nested) == sorted(states)
    for run in nested:
        assert run.info.status == "KILLED" and run.data.tags["final_state"] == "interrupted", run.data.tags
    assert len(interrupted["optuna"]) == len(states)
    for trial in interrupted["optuna"]:
        assert trial.state == TrialState.WAITING and trial.user_attrs["final_state"] == "interrupted", trial


def test_resume_continues_the_interrupted_trials_and_finishes(interrupted):
    resumed = interrupted["resumed"]
    assert resumed.returncode == 0, tail(resumed.stdout)
    before, after = interrupted["before"], interrupted["after"]
    summary = read_json(interrupted["dir"] / "summary.json")
    ended_at = {t["trial_id"]: t["steps"] for t in summary["trials"]}
    for trial_id, rows in before.items():
        old, new = steps_of(rows), steps_after_resume(rows, after.get(trial_id, []))
        # Continued from the newest checkpoint (a report Ray had not processed is reported again), nothing redone,
        # nothing missing: every evaluation step up to the trial's end was reported once.
        assert new and new[0] in (old[-1], old[-1] + EVAL_EVERY), (trial_id, old, new)
        assert sorted(set(old) | set(new)) == list(range(EVAL_EVERY, ended_at[trial_id] + 1, EVAL_EVERY)), (
            trial_id, old, new)
    assert summary["status"] == "finished" and summary["best"] is not None
    assert {t["state"] for t in summary["trials"]} <= {"completed", "stopped_by_asha"}, summary["trials"]
    assert [s["outcome"] for s in summary["sessions"]] == ["interrupted", "finished"]
    assert summary["wall_seconds"] == pytest.approx(sum(s["wall_seconds"] for s in summary["sessions"]), abs=0.2)
    assert (interrupted["dir"] / "best.yaml").exists()
    trials = optuna_trials(interrupted["dir"] / "optuna.db")
    assert len(trials) == len(summary["trials"])
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials), [t.state for t in trials]
    parents, nested = split_runs(mlflow_runs(interrupted["uri"], "interrupted"))
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(nested) == len(summary["trials"]) and all(r.info.status == "FINISHED" for r in nested)
    assert {r.data.tags["final_state"] for r in nested} <= {"completed", "stopped_by_asha"}


def test_sigterm_exits_143_with_interrupted_trials(workdir):
    tmp, env = workdir
    results = tmp / "term"
    space = interrupt_space(tmp, "terminated", num_samples=1)
    code, out, _ = interrupt_after_first_reports(cli_args(space, results), env, "terminated", signal.SIGTERM,
                                                 reports=1)
    assert code == 143, tail(out)
    summary = read_json(results / "terminated" / "summary.json")
    assert summary["status"] == "interrupted" and [t["state"] for t in summary["trials"]] == ["interrupted"]
    assert summary["sessions"][-1]["signal"] == "SIGTERM"
    assert out.strip().splitlines()[-1].endswith("--resume")


def test_two_sweeps_at_once_get_two_folders(workdir):
    """Item 3: the same space started twice at the same moment into one results folder: both finish, each in its
    own folder with its own Optuna study; a --resume while one runs fails at once with exit 2."""
    tmp, env = workdir
    results = tmp / "twice"
    run = space_document()["run"]
    run["train"].update(steps=40, eval_every=20)
    space = write_space(tmp / "twice.yaml", name="twice", run=run, search={"num_samples": 1},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1})
    args = cli_args(space, results)
    barrier, outcomes = threading.Barrier(2), {}
    # Each driver its own marker and Ray temp dir: run_cli kills what its own environment started, nothing else.
    envs = [sweep_env(Path(env["IMBGAN_CACHE"]), tmp / f"ray-twice-{i}") for i in range(3)]

    def one(index):
        barrier.wait()
        outcomes[index] = run_cli(args, envs[index], timeout=400)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    wait_until(lambda: (results / "twice" / ".sweep.lock").exists(), 120, "the first claim")
    busy = run_cli(args + ["--resume"], envs[2], timeout=120)
    for t in threads:
        t.join()
    for proc in outcomes.values():
        assert proc.returncode == 0, tail(proc.stdout)
    folders = sorted(p.name for p in results.iterdir() if p.is_dir() and p.name.startswith("twice"))
    assert folders == ["twice", "twice-2"], folders
    for name in folders:
        assert len(optuna_trials(results / name / "optuna.db")) == 1
        assert read_json(results / name / "summary.json")["status"] == "finished"
    assert busy.returncode == 2 and "is running" in busy.stdout, tail(busy.stdout)
