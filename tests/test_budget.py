"""Sweep budgets (issue #15 item 1): training steps over all trials and wall time, through the CLI with real Ray,
Optuna and MLflow. Accounting is exact (steps spent <= budget + one evaluation period per trial in flight), a trial
the budget stops ends ``stopped_by_budget`` everywhere (summary, MLflow, Optuna), and both limits are recorded."""
from __future__ import annotations

import pytest
from optuna.trial import TrialState

from helpers_sweep import (cli_args, mlflow_runs, optuna_trials, private_workdir, read_json, run_cli, space_document,
                           split_runs, write_space)
from trainables import reporting
from trainables.budget import parse_duration
from trainables.spaces import SpaceError, load_space

STEPS, EVERY = 60, 20  # helpers_sweep.TINY_RUN: 60 steps a trial, an evaluation every 20


@pytest.fixture(scope="module")
def workdir(cache_dir):
    with private_workdir(cache_dir, "imbb") as folder_and_env:
        yield folder_and_env


def budget_space(tmp, name: str, concurrent: int):
    return write_space(tmp / f"{name}.yaml", name=name, search={"scheduler": "fifo", "num_samples": 2},
                       resources={"cpus_per_trial": 1, "gpus_per_trial": 0, "max_concurrent": concurrent})


def sweep(workdir, name: str, concurrent: int, *flags: str) -> dict:
    tmp, env = workdir
    results = tmp / name
    proc = run_cli(cli_args(budget_space(tmp, name, concurrent), results, *flags), env, timeout=400)
    assert proc.returncode == 0, proc.stdout[-4000:]
    sweep_dir = results / name
    return {"out": proc.stdout, "dir": sweep_dir, "summary": read_json(sweep_dir / "summary.json"),
            "uri": f"sqlite:///{results / 'mlflow.db'}", "name": name}


@pytest.fixture(scope="module")
def sequential(workdir):
    """One trial at a time, 130 steps: two trials complete (120), the third is stopped at its first report (140)."""
    return sweep(workdir, "seq", 1, "--budget-steps", "130")


def test_trials_keep_coming_until_the_budget_is_spent(sequential):
    summary = sequential["summary"]
    states = sorted((t["state"], t["steps"]) for t in summary["trials"])
    assert states == [(reporting.COMPLETED, STEPS), (reporting.COMPLETED, STEPS),
                      (reporting.STOPPED_BY_BUDGET, EVERY)]  # num_samples 2 in the file: the budget flag lifts it
    assert summary["budget"] == {"steps": 130, "seconds": None, "steps_spent": 140,
                                 "seconds_spent": summary["wall_seconds"], "exhausted": True}
    assert summary["states"][reporting.STOPPED_BY_BUDGET] == 1
    assert "budget: " in sequential["out"] and "/130 steps" in sequential["out"]


def test_a_budget_stop_is_its_own_state_in_optuna_and_mlflow(sequential):
    told = {t.user_attrs.get("final_state"): t.state for t in optuna_trials(sequential["dir"] / "optuna.db")}
    assert told == {reporting.COMPLETED: TrialState.COMPLETE, reporting.STOPPED_BY_BUDGET: TrialState.PRUNED}
    parents, nested = split_runs(mlflow_runs(sequential["uri"], sequential["name"]))
    names = sorted(r.info.run_name.split(" · ")[0].split(" ", 1)[1] for r in nested)
    assert names == [reporting.COMPLETED, reporting.COMPLETED, reporting.STOPPED_BY_BUDGET]
    [parent] = parents
    assert parent.data.params["search.budget.steps"] == "130"
    assert parent.data.params["search.budget.seconds"] == "None"
    assert parent.data.tags["budget_exhausted"] == "true"
    assert parent.data.metrics["total_steps_trained"] == 140
    assert parent.data.metrics[f"trials_{reporting.STOPPED_BY_BUDGET}"] == 1


def test_steps_spent_stay_within_one_period_per_trial_in_flight(workdir):
    concurrent, budget = 2, 150
    summary = sweep(workdir, "par", concurrent, "--budget-steps", str(budget))["summary"]
    spent = summary["budget"]["steps_spent"]
    assert spent == sum(t["steps"] for t in summary["trials"]) == summary["total_steps_trained"]
    assert budget <= spent <= budget + concurrent * EVERY
    assert {t["state"] for t in summary["trials"]} <= {reporting.COMPLETED, reporting.STOPPED_BY_BUDGET}


def test_a_time_budget_stops_trials_at_their_next_report_and_adds_up_over_sessions(tmp_path):
    """The stopper and the searcher's ledger on the real clock (the step budget's runs above show Ray honouring the
    stopper's relabelled result); two sessions of 0.3 s spend a 0.5 s budget, as after a --resume."""
    import time

    from trainables.budget import Budget, BudgetLedger, BudgetStopper

    path, budget = tmp_path / "budget_state.json", Budget(seconds=0.5)
    BudgetLedger(path, budget).start_session()
    stopper, searcher_view = BudgetStopper(BudgetLedger(path, budget)), BudgetLedger(path, budget)
    report = {reporting.STEP: 20, reporting.STATE: reporting.RUNNING}
    assert not stopper("t1", dict(report)) and not searcher_view.exhausted()
    time.sleep(0.3)
    assert not stopper("t1", dict(report, step=40))
    BudgetLedger(path, budget).start_session()  # the driver stopped and resumed: the clock goes on from 0.3 s
    stopper, searcher_view = BudgetStopper(BudgetLedger(path, budget)), BudgetLedger(path, budget)
    assert 0.3 <= stopper.ledger.seconds_spent() < 0.5
    time.sleep(0.25)
    stopped = dict(report, step=60)
    assert stopper("t2", stopped) and stopped[reporting.STATE] == reporting.STOPPED_BY_BUDGET
    finished = {reporting.STEP: 60, reporting.STATE: reporting.COMPLETED}
    assert stopper("t1", finished) and finished[reporting.STATE] == reporting.COMPLETED  # a final report keeps its state
    assert searcher_view.exhausted()
    saved = BudgetLedger.read(path)
    assert saved["trial_steps"] == {"t1": 60, "t2": 60} and saved["steps_spent"] == 120 and saved["exhausted"]


@pytest.mark.parametrize("text, seconds", [("90", 90.0), ("90s", 90.0), ("20m", 1200.0), ("1h30m", 5400.0),
                                           ("1.5h", 5400.0), (45, 45.0)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10 minutes", "-5s", "0"])
def test_bad_durations_are_refused(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bad_budgets_name_the_key(tmp_path):
    space = write_space(tmp_path / "s.yaml")
    with pytest.raises(SpaceError, match=r"search.budget.time: 'soon' is not a duration"):
        load_space(str(space), {"search.budget.time": "soon"})
    with pytest.raises(SpaceError, match=r"search.budget.steps: 0"):
        load_space(str(space), {"search.budget.steps": 0})
    with pytest.raises(SpaceError, match=r"search.num_samples: null .* needs search.budget"):
        load_space(str(space), {"search.num_samples": None})
    with pytest.raises(SpaceError, match=r"search.budget.hours: unknown key"):
        load_space(str(space), {"search.budget.hours": 2})


def test_bad_budget_flags_exit_2_before_ray_starts(workdir, tmp_path):
    _, env = workdir
    space = write_space(tmp_path / "s.yaml", name="flags")
    proc = run_cli(cli_args(space, tmp_path / "r", "--time-budget", "soon"), env, timeout=60)
    assert proc.returncode == 2 and "search.budget.time: 'soon' is not a duration" in proc.stdout
    assert not (tmp_path / "r").exists()
    dry = run_cli(cli_args(space, tmp_path / "r", "--budget-steps", "500", "--dry-run"), env, timeout=60)
    assert dry.returncode == 0 and "budget: 500 training steps over all trials" in dry.stdout
    assert "as many as the budget allows" in dry.stdout
