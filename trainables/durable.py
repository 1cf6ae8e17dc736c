"""Schedulers that keep a sweep resumable after the driver is killed (SIGKILL, lost SSH session, rebooted head).

Two gaps in Ray 2.60, both seen in tests/test_faults.py:
  - Ray saves its experiment state (trials, their latest checkpoints, the searcher) at most every ~10 s. A driver
    killed in between loses the trials started since the last save (their Optuna trials stay RUNNING, their MLflow
    runs end "interrupted", their training is redone by new trials) and re-runs trials that had finished.
    ``DurableStateMixin`` asks the controller for a save right after every trial is added, reports or ends (the
    next scheduling step, when Ray has processed the event), so the saved state is never more than one event old.
  - ``Tuner.restore`` rebuilds the scheduler from ``tuner.pkl``, the empty ASHA the sweep started with
    (docs/reference.md#ray-restore-asha): every rung would start empty after ``--resume``. ``PersistentASHA`` writes
    its rungs and the
    trials it stopped to ``asha_state.json`` after every decision (atomic rename) and reads them back before its
    first decision after a resume; a trial it had stopped is stopped again should it report.
"""
from __future__ import annotations

import json
from pathlib import Path

from ray.tune.schedulers import AsyncHyperBandScheduler, FIFOScheduler
from ray.tune.schedulers.trial_scheduler import TrialScheduler

from imbgan_core.files import atomic_write_text


class DurableStateMixin:
    """Save Ray's experiment state at the first scheduling step after each trial event (see module docstring)."""

    _save_requested = False

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        self._save_requested = True

    def on_trial_result(self, tune_controller, trial, result):
        self._save_requested = True
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self._save_requested = True

    def on_trial_error(self, tune_controller, trial):
        super().on_trial_error(tune_controller, trial)
        self._save_requested = True

    def choose_trial_to_run(self, tune_controller):
        """Called at the start of every controller step, after the previous step's event was fully processed."""
        if self._save_requested:
            self._save_requested = False
            # The scheduler sees the controller through Ray's TrialRunnerWrapper, whose attribute whitelist lacks
            # ``checkpoint``: go to the wrapped controller (its public method) to avoid a "restricted API" warning.
            getattr(tune_controller, "_tune_controller", tune_controller).checkpoint(force=True)
        return super().choose_trial_to_run(tune_controller)


class DurableFIFO(DurableStateMixin, FIFOScheduler):
    """FIFO scheduling (every trial runs its full budget) with prompt experiment-state saves."""


class PersistentASHA(DurableStateMixin, AsyncHyperBandScheduler):
    """ASHA (Li et al. 2020, Ray's AsyncHyperBandScheduler) whose rungs survive ``--resume``; module docstring."""

    def __init__(self, state_path: Path, **asha_args):
        super().__init__(**asha_args)
        self.state_path = str(state_path)
        self._stopped: dict[str, float] = {}  # trial id -> time attribute at which ASHA stopped it
        self._loaded = False

    def on_trial_add(self, tune_controller, trial):
        self._load_once()
        super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        self._load_once()
        if trial.trial_id in self._stopped:
            return TrialScheduler.STOP
        action = super().on_trial_result(tune_controller, trial, result)
        if action == TrialScheduler.STOP and self._time_attr in result:
            self._stopped[trial.trial_id] = result[self._time_attr]
        self._save()
        return action

    def on_trial_complete(self, tune_controller, trial, result: dict):
        self._load_once()
        super().on_trial_complete(tune_controller, trial, result)
        self._save()

    def debug_string(self) -> str:
        """The rungs for Ray's live table, in the metric's own units. Ray's shows what ASHA records,
        ``metric_op * value``: every intra-FID negated for mode=min (``Iter 400.000: -41.3``, issue #16)."""
        op = self._metric_op or 1.0
        lines = [f"ASHA: {self._num_stopped} trial(s) stopped; a trial goes on past a rung when its {self._metric} "
                 f"is {'at most' if op < 0 else 'at least'} the rung's cutoff"]
        for bracket in self._brackets:
            rungs = [f"{self._time_attr} {milestone:g}: {_cutoff_text(bracket.cutoff(recorded), op)} "
                     f"({len(recorded)} seen)" for milestone, recorded in reversed(bracket._rungs)]
            lines.append("  " + " | ".join(rungs))
        return "\n".join(lines)

    def _load_once(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        path = Path(self.state_path)
        if not path.exists():
            return
        state = json.loads(path.read_text())
        for bracket, rungs in zip(self._brackets, state["brackets"]):
            for (_, recorded), (_, saved) in zip(bracket._rungs, rungs):
                recorded.update(saved)
        self._stopped.update(state["stopped"])
        self._num_stopped = state["num_stopped"]

    def _save(self) -> None:
        state = {"brackets": [[[milestone, recorded] for milestone, recorded in b._rungs] for b in self._brackets],
                 "stopped": self._stopped, "num_stopped": self._num_stopped}
        atomic_write_text(Path(self.state_path), json.dumps(state))


def _cutoff_text(cutoff, op: float) -> str:
    """A rung's cutoff back in the metric's units (ASHA records ``op * value``); ``-`` before any result."""
    if cutoff is None or cutoff != cutoff:
        return "-"
    return f"{op * float(cutoff):.4g}"
