"""A sweep's compute budget (issue #15): training steps summed over all trials, and/or the sweep's wall time.

While the budget lasts, the searcher proposes trials; once it is spent, the searcher says it is finished and every
trial in flight is stopped at its next report (it finishes its current evaluation period), so steps spent stay
within the budget plus one evaluation period per trial in flight. A trial stopped this way ends in its own state,
``stopped_by_budget``: the stopper writes it into the result Ray keeps (Ray lets a stopper see the result dict
itself), so the summary, MLflow, Optuna (PRUNED, as for ASHA) and the progress line read it from the last result.

Why not Ray's ``time_budget_s``: Ray ends the experiment when it runs out, killing trials mid-period, and they read
as interrupted; here the time budget stops trials at a report like the step budget does.

Steps spent are what trials trained themselves (``steps_trained``: an ensemble's reused members are free), the
latest report of each trial, summed. They live in ``budget_state.json`` in the sweep folder, written after every
report (atomic rename) and read back after ``--resume``: ``Tuner.restore`` rebuilds the stopper from ``tuner.pkl``
as it was at the start, and the searcher is pickled apart from it, so the file is what both share. Wall time adds
up over sessions in the same file.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

from imbgan_core.files import atomic_write_text
from trainables import reporting

DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


def parse_duration(text) -> float:
    """Seconds from ``90``, ``90s``, ``20m``, ``1h30m``, ``1.5h``; ValueError naming the text otherwise."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        match = DURATION.match(str(text)) if str(text).strip() else None
        if match is None or not any(match.groups()):
            raise ValueError(f"{text!r} is not a duration (e.g. 90s, 20m, 1h30m)")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = 3600 * hours + 60 * minutes + secs
    if not seconds > 0:
        raise ValueError(f"{text!r}: a time budget must be positive")
    return seconds


@dataclass(frozen=True)
class Budget:
    """``steps``: training steps over all trials; ``seconds``: the sweep's wall time over all sessions (None: no
    limit of that kind)."""

    steps: int | None = None
    seconds: float | None = None

    def __bool__(self) -> bool:
        return self.steps is not None or self.seconds is not None

    def to_dict(self) -> dict:
        return {"steps": self.steps, "seconds": self.seconds}


class BudgetLedger:
    """Steps spent per trial and wall time spent, in ``budget_state.json``; one per object that needs them (the
    stopper writes, the searcher reads)."""

    def __init__(self, path: Path, budget: Budget):
        self.path, self.budget = str(path), budget
        self._session: tuple[float, float] | None = None  # (this session's start, seconds spent in earlier ones)
        self._trial_steps: dict[str, int] = {}

    def start_session(self) -> None:
        """The driver, before each session's ``fit`` (fresh or ``--resume``): the clock of this session starts now,
        after the seconds that earlier sessions spent."""
        state = self.read(Path(self.path))
        state.update(budget=self.budget.to_dict(), seconds_before=float(state.get("seconds_spent", 0.0)),
                     session_started_at=time.time())
        atomic_write_text(Path(self.path), json.dumps(state, indent=1))
        self._session = None

    def _begin(self) -> None:
        """At the first use in a driver session: this session's clock and the steps spent so far, from the file."""
        if self._session is None:
            state = self.read(Path(self.path))
            self._session = (float(state.get("session_started_at", time.time())),
                             float(state.get("seconds_before", 0.0)))
            self._trial_steps = {k: int(v) for k, v in state.get("trial_steps", {}).items()}

    def __getstate__(self) -> dict:
        """Ray pickles the stopper (tuner.pkl) and the searcher (experiment state): the clock and the steps are
        read from the file again after a restore, never taken from an earlier session's pickle."""
        return {**self.__dict__, "_session": None, "_trial_steps": {}}

    @staticmethod
    def read(path: Path) -> dict:
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}

    def record(self, trial_id: str, steps_trained: int) -> None:
        self._begin()
        self._trial_steps[trial_id] = max(int(steps_trained), self._trial_steps.get(trial_id, 0))
        self.save()

    def refresh(self) -> None:
        """Steps spent as the file has them now (the searcher's view of what the stopper wrote)."""
        self._begin()
        saved = self.read(Path(self.path)).get("trial_steps", {})
        self._trial_steps = {k: int(v) for k, v in saved.items()}

    def save(self) -> None:
        start, before = self._session
        state = {"budget": self.budget.to_dict(), **self.spent(), "trial_steps": self._trial_steps,
                 "seconds_before": before, "session_started_at": start}
        atomic_write_text(Path(self.path), json.dumps(state, indent=1))

    def steps_spent(self) -> int:
        self._begin()
        return sum(self._trial_steps.values())

    def seconds_spent(self) -> float:
        self._begin()
        start, earlier = self._session
        return earlier + time.time() - start

    def exhausted(self) -> bool:
        if self.budget.steps is not None and self.steps_spent() >= self.budget.steps:
            return True
        return self.budget.seconds is not None and self.seconds_spent() >= self.budget.seconds

    def spent(self) -> dict:
        """What summary.json and MLflow record."""
        return {"steps_spent": self.steps_spent(), "seconds_spent": round(self.seconds_spent(), 1),
                "exhausted": self.exhausted()}


class BudgetStopper:
    """Counts every report's steps; once the budget is spent, stops each trial at its next report as
    ``stopped_by_budget`` (a final report, completed or diverged, keeps its state). A plain callable: Ray wraps it
    in its FunctionStopper, which hands it the result dict Ray keeps (and this module stays free of Ray imports,
    so space validation that uses ``Budget`` does not start Ray)."""

    def __init__(self, ledger: BudgetLedger):
        self.ledger = ledger

    def __call__(self, trial_id: str, result: dict) -> bool:
        if reporting.STEP not in result:
            return False
        self.ledger.record(trial_id, int(result.get(reporting.STEPS_TRAINED, result[reporting.STEP])))
        if not self.ledger.exhausted():
            return False
        if result.get(reporting.STATE) == reporting.RUNNING:
            result[reporting.STATE] = reporting.STOPPED_BY_BUDGET  # Ray keeps this dict as the trial's last result
        return True
