"""A driver killed right after a trial's final report (issue #12, item 2), made deterministic.

Ray saves its experiment state after each event; a driver killed within ~50 ms of a trial's last report leaves a
saved state that points at the trial's previous checkpoint while the trial's folder already holds the final one.
Rather than racing a kill against that window, this test builds exactly that state from a real sweep: it keeps a
copy of the experiment state files as they were when the trial's latest result was step 40, lets the sweep finish
(step 60), puts the old state files (and the checkpoints they point at, which a killed driver would not have
deleted yet) over the finished sweep, and runs ``--resume``. The trial must end
``completed`` at step 60 with its own final value everywhere, not ``stopped_by_asha`` at 40.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from optuna.trial import TrialState

from helpers_sweep import (cli_args, kill_leftovers, kill_tree, mlflow_runs, optuna_trials, read_json, run_cli,
                           short_tmpdir, space_document, split_runs, start, sweep_env, tail, wait_until, write_space)

pytestmark = pytest.mark.slow

STEPS, EVAL_EVERY, SNAPSHOT_STEP = 60, 20, 40
STATE_FILES = ("experiment_state-*.json", "searcher-state-*.pkl")


def saved_steps(experiment: Path) -> list[int]:
    """The step of each trial's last result in Ray's saved experiment state (empty while there is none)."""
    steps = []
    for path in experiment.glob("experiment_state-*.json"):
        try:
            state = json.loads(path.read_text())
        except (OSError, ValueError):  # being replaced right now
            return []
        for _, runtime in state.get("trial_data", []):
            steps.append(int(json.loads(runtime).get("last_result", {}).get("step", 0)))
    return steps


@pytest.fixture(scope="module")
def restored(cache_dir):
    tmp = short_tmpdir("imbb")
    env = sweep_env(Path(cache_dir), tmp / "ray")
    run = space_document()["run"]
    run["train"].update(steps=STEPS, eval_every=EVAL_EVERY)
    space = write_space(tmp / "budget.yaml", name="budget", run=run,
                        search={"num_samples": 1, "scheduler": {"asha": {"grace_period": 20, "reduction_factor": 2}}},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": 1})
    first, second = tmp / "first", tmp / "second"
    snapshot = tmp / "snapshot"
    proc = start(cli_args(space, first), env)
    try:
        wait_until(lambda: saved_steps(first / "budget") == [SNAPSHOT_STEP], 300, "the saved state at step 40",
                   interval=0.02, proc=proc)
        snapshot.mkdir()
        for pattern in STATE_FILES:
            for path in (first / "budget").glob(pattern):
                shutil.copy2(path, snapshot / path.name)
        # The checkpoints that state may point at: the driver deletes the oldest only when it registers a newer one.
        for folder in (first / "budget").glob("train_gan_*/checkpoint_*"):
            shutil.copytree(folder, snapshot / "checkpoints" / folder.parent.name / folder.name)
        out, _ = proc.communicate(timeout=300)
    finally:
        kill_tree(proc, env)
    assert proc.returncode == 0, tail(out)
    finished = read_json(first / "budget" / "summary.json")
    shutil.copytree(first, second, symlinks=True)
    for pattern in STATE_FILES:
        for path in (second / "budget").glob(pattern):
            path.unlink()
    for path in snapshot.iterdir():
        if path.is_file():
            shutil.copy2(path, second / "budget" / path.name)
    for folder in (snapshot / "checkpoints").glob("*/*"):
        target = second / "budget" / folder.parent.name / folder.name
        if not target.exists():
            shutil.copytree(folder, target)
    assert saved_steps(second / "budget") == [SNAPSHOT_STEP]  # the state a kill after the final report leaves
    resumed = run_cli(cli_args(space, second, "--resume"), env, timeout=300)
    yield {"finished": finished, "resumed": resumed, "dir": second / "budget",
           "uri": f"sqlite:///{second / 'mlflow.db'}"}
    kill_leftovers(env)
    shutil.rmtree(tmp, ignore_errors=True)


def test_trial_restored_at_its_budget_reports_its_final_result(restored):
    assert restored["resumed"].returncode == 0, tail(restored["resumed"].stdout)
    before, after = restored["finished"]["trials"][0], read_json(restored["dir"] / "summary.json")["trials"][0]
    assert before["state"] == "completed" and before["steps"] == STEPS
    assert (after["state"], after["steps"]) == ("completed", STEPS), after
    assert after["metrics"]["intra_fid"] == before["metrics"]["intra_fid"]


def test_mlflow_and_optuna_keep_the_final_result(restored):
    _, nested = split_runs(mlflow_runs(restored["uri"], "budget"))
    assert len(nested) == 1 and nested[0].data.tags["final_state"] == "completed"
    assert nested[0].info.status == "FINISHED"
    [trial] = optuna_trials(restored["dir"] / "optuna.db")
    assert trial.state == TrialState.COMPLETE
    assert trial.value == restored["finished"]["trials"][0]["metrics"]["intra_fid"]
