"""Quiet, readable sweep output: one line per trial report, and the known-harmless library noise switched off."""
from __future__ import annotations

import logging
import os
import sys
import warnings

import optuna
from ray import tune

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


def status_reporter(metric: str, searched_keys: list[str]) -> tune.CLIReporter:
    """Ray's trial table with the searched parameters and the headline metrics only (not the whole run config).

    No ``state`` column: a trial ASHA stopped keeps its last reported state ("running") there, which contradicts
    Ray's own TERMINATED; the final table (summary) shows completed / stopped_by_asha / diverged / error.
    """
    return tune.CLIReporter(parameter_columns=searched_keys,
                            metric_columns=[reporting.STEP, metric], max_report_frequency=30)


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
