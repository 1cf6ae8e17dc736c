"""Quiet, readable sweep output: one line per trial report, and the known-harmless library noise switched off."""
from __future__ import annotations

import collections
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import optuna
from ray import tune
from ray.tune.experiment import Trial

from imbgan_core.train import format_duration
from trainables import reporting

# Environment for Ray, set before ray.init (workers inherit it):
#  - RAY_DEDUP_LOGS=0: identical lines from 2 trials are real progress, not noise to fold into "[repeated 2x]";
#  - RAY_USAGE_STATS_ENABLED=0: no usage-stats prompt/upload attempt on an offline machine;
#  - RAY_AIR_NEW_OUTPUT=0: Ray's classic trial table (``status_reporter``); the new output engine prints every
#    trial's full configuration (the whole run config) at start and its every metric at the end.
RAY_ENV = {"RAY_DEDUP_LOGS": "0", "RAY_USAGE_STATS_ENABLED": "0", "RAY_AIR_NEW_OUTPUT": "0"}

# Python warnings known to be harmless here (each checked against the installed versions):
HARMLESS_WARNINGS = (
    # Ray's OptunaSearch warns when a define-by-run space takes a moment on a busy 2-core machine.
    (r"Define-by-run function passed in the `space` argument took", UserWarning),
    # MLflow's sqlite store configures SQLAlchemy mappers with the deprecated ``noload`` strategy.
    (r"The ``noload`` loader strategy is deprecated", DeprecationWarning),
)


def quiet_libraries() -> None:
    """Apply RAY_ENV (without overriding the user's own settings) and filter the harmless warnings above."""
    for key, value in RAY_ENV.items():
        os.environ.setdefault(key, value)
    for pattern, category in HARMLESS_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    # Optuna marks parts of the ask/tell interface Ray uses as experimental.
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    # Alembic and MLflow log every sqlite schema migration at INFO on the first use of mlflow.db / optuna.db.
    for name in ("alembic", "mlflow.store.db.utils", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Ray's own advice after an interruption names ``Tuner.restore(...)``; the driver prints the --resume command.
    logging.getLogger("ray.tune.tune").addFilter(
        lambda record: "Tuner.restore" not in record.getMessage() and "Stop signal received" not in record.getMessage())


def quiet_trial_logs() -> None:
    """In a trial process: Ray Train logs "Checkpoint successfully created at ..." at INFO for every report."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def status_reporter(metric: str, searched_keys: list[str], sweep_dir: Path | None = None, budget: int = 0,
                    early_stopping: bool = False, step_budget: int | None = None) -> "SweepReporter":
    """Ray's trial table with the searched parameters and the headline metrics only (not the whole run config).

    No ``state`` column: a trial ASHA stopped keeps its last reported state ("running") there, which contradicts
    Ray's own TERMINATED; the final table (summary) shows completed / stopped_by_asha / diverged / error.
    """
    return SweepReporter(metric, searched_keys, sweep_dir, budget, early_stopping, step_budget)


class StepRate:
    """Training steps per second of the whole sweep, measured from the first report of this session on."""

    def __init__(self):
        self.first: tuple[float, int] | None = None
        self.rate: float | None = None

    def observe(self, steps: int, now: float | None = None) -> float | None:
        now = time.monotonic() if now is None else now
        if self.first is None or steps < self.first[1]:
            self.first = (now, steps)
        elif now > self.first[0] and steps > self.first[1]:
            self.rate = (steps - self.first[1]) / (now - self.first[0])
        return self.rate


def sweep_progress(trials: list, total: int | None, budget: int, rate: StepRate, early_stopping: bool,
                   now: float | None = None, step_budget: int | None = None) -> str:
    """``trials: 3/8 done (2 completed, 1 stopped_by_asha), 1 running, 4 pending | 3.4 steps/s | ETA <= 5m50s``.

    The ETA assumes every unfinished trial trains to ``budget`` at the pace seen so far: with ASHA an upper bound.
    With a sweep step budget (``step_budget``) the line adds ``budget: 3200/8000 steps`` and the ETA is at most the
    budget's rest; a budget-bound sweep (no trial count) shows ``3/? done``.
    """
    ended = [t for t in trials if t.status in (Trial.TERMINATED, Trial.ERROR)]
    running = sum(t.status == Trial.RUNNING for t in trials)
    bounded = bool(total) and 0 < total < sys.maxsize
    unstarted = max(0, total - len(trials)) if bounded else 0
    pending = len(trials) - len(ended) - running + unstarted
    states = collections.Counter(reporting.final_state(t.last_result, errored=t.status == Trial.ERROR)
                                 for t in ended)
    breakdown = ", ".join(f"{states[s]} {s}" for s in reporting.FINAL_STATES if states[s])
    steps = {t.trial_id: int((t.last_result or {}).get(reporting.STEP, 0) or 0) for t in trials}
    per_second = rate.observe(sum(steps.values()), now)
    left = unstarted * budget + sum(max(0, budget - steps[t.trial_id]) for t in trials if t not in ended)
    spent_text = ""
    if step_budget is not None:
        spent = sum(int((t.last_result or {}).get(reporting.STEPS_TRAINED, steps[t.trial_id]) or 0) for t in trials)
        rest = max(0, step_budget - spent)
        left = min(left, rest) if bounded else rest
        spent_text = f"budget: {spent}/{step_budget} steps | "
    eta = format_duration(left / per_second) if per_second else "?"
    return (f"trials: {len(ended)}/{total if bounded else '?'} done{f' ({breakdown})' if breakdown else ''}, "
            f"{running} running, {pending} pending | "
            f"{f'{per_second:.2f}' if per_second else '?'} steps/s | {spent_text}"
            f"ETA {'<= ' if (early_stopping or step_budget is not None) and left else ''}{eta}")


class SweepReporter(tune.CLIReporter):
    """Ray's classic table, led by what a user waits for (``sweep_progress``), and pointing to the sweep folder:
    Ray's ``Result logdir:`` names its temporary session folder, not where the results are."""

    def __init__(self, metric: str, searched_keys: list[str], sweep_dir: Path | None, budget: int,
                 early_stopping: bool, step_budget: int | None = None):
        super().__init__(parameter_columns=searched_keys, metric_columns=[reporting.STEP, metric],
                         max_report_frequency=30)
        self.sweep_dir, self.budget, self.early_stopping = sweep_dir, budget, early_stopping
        self.step_budget = step_budget
        self.step_rate = StepRate()

    def setup(self, *args, **kwargs):
        """Ray calls this at the start of every session (``--resume`` too): the pace is measured afresh."""
        super().setup(*args, **kwargs)
        self.step_rate = StepRate()

    def report(self, trials, done: bool, *sys_info: str):
        self._print(self.progress_text(trials, done, *sys_info))

    def progress_text(self, trials, done: bool, *sys_info: str) -> str:
        lines, seen_logdir = [], False
        for line in self._progress_str(trials, done, *sys_info).split("\n"):
            if line.startswith("Result logdir: "):
                if not seen_logdir and self.sweep_dir is not None:
                    lines.append(f"Results: {self.sweep_dir}")
                seen_logdir = True
                continue
            lines.append(line)
        progress = sweep_progress(trials, self._total_samples, self.budget, self.step_rate, self.early_stopping,
                                  step_budget=self.step_budget)
        lines.insert(min(2, len(lines)), progress)  # under "== Status ==" and the time line
        return "\n".join(lines)


def trial_dirname(trial) -> str:
    """``train_gan_<id>``: Ray's default name would embed the whole run config."""
    return f"{trial.trainable_name}_{trial.trial_id}"


class ReportLines(tune.Callback):
    """Print ``trial <id> step <n>: <metric>=<value> (<state>)`` for every report, on the driver."""

    def __init__(self, metric: str):
        self.metric = metric

    def on_trial_result(self, iteration, trials, trial, result, **info):
        value = result.get(self.metric)
        shown = f"{value:.3f}" if isinstance(value, (int, float)) else "-"
        print(f"trial {trial.trial_id} step {result.get(reporting.STEP, '?')}: {self.metric}={shown} "
              f"({result.get(reporting.STATE, '?')})", file=sys.stdout, flush=True)
