"""Ray's OptunaSearch, told the truth about early-stopped trials, with its study persisted in sqlite.

Ray 2.60's ``OptunaSearch.on_trial_complete`` tells Optuna COMPLETE with the trial's *last* value, so a trial that
ASHA stopped at 200 steps enters TPE as if its low-budget intra-FID were the full-budget result
(docs/reference.md#ray-optuna-complete).
Here (docs/sweeps.md, "Optuna and ASHA"):
  - every evaluation is reported to the Optuna trial as an intermediate value at ``step`` (training steps, the
    same time axis as ASHA; Ray's stock code uses the report count);
  - a trial that ended below the full budget without diverging is told PRUNED: Optuna keeps its intermediate
    values, and TPE ranks pruned trials below completed ones by their last intermediate value;
  - a diverged trial is told COMPLETE with the trial's penalty value (a true outcome of those hyperparameters);
  - an errored trial is told FAIL (no value), so TPE ignores it.
"""
from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from trainables import reporting
from trainables.budget import BudgetLedger
from trainables.spaces import Space, trained_suggestion


def make_sampler(name: str, seed: int, n_startup_trials: int) -> optuna.samplers.BaseSampler:
    """Seeded TPE (Optuna 5 defaults: multivariate, constant liar) or random search for baselines.

    ``n_startup_trials`` random trials come first (Optuna's default 10); the 8-trial CPU spaces use 4 so that TPE
    proposes half of the sweep. Finished trials count towards it whether completed or pruned by ASHA.
    """
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)


class TruthfulOptunaSearch(OptunaSearch):
    """OptunaSearch over ``space.suggest`` (define-by-run), recording ASHA stops as PRUNED; see module docstring."""

    def __init__(self, space: Space, study_db: Path, study_name: str, budget: BudgetLedger | None = None):
        storage = optuna.storages.RDBStorage(f"sqlite:///{Path(study_db).resolve()}")
        super().__init__(space=space.suggest, metric=space.search.metric, mode=space.search.mode,
                         sampler=make_sampler(space.search.sampler, space.search.seed, space.search.n_startup_trials),
                         study_name=study_name, storage=storage)
        self._reported_steps: dict[str, set[int]] = {}
        self._sweep_space = space
        self._budget = budget

    def suggest(self, trial_id: str):
        """Optuna's dotted suggestion, with the run dict it trains (``spaces.trained_suggestion``); FINISHED once
        the sweep's budget is spent (trainables.budget)."""
        if self._budget is not None:
            self._budget.refresh()
            if self._budget.exhausted():
                return Searcher.FINISHED
        suggestion = super().suggest(trial_id)
        return trained_suggestion(self._sweep_space, suggestion) if isinstance(suggestion, dict) else suggestion

    def _setup_study(self, mode):
        """Ray creates the study; name its objective after the sweep metric (Optuna shows "Objective 0" otherwise)."""
        super()._setup_study(mode)
        if self._ot_study.metric_names is None:
            self._ot_study.set_metric_names([self.metric])

    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id not in self._completed_trials:
            self._report_intermediate(trial_id, result)

    def _report_intermediate(self, trial_id: str, result: dict) -> None:
        value = result.get(self.metric)
        if value is None or result.get(reporting.STATE) == reporting.DIVERGED:
            return
        step = int(result.get(reporting.STEP, 0))
        reported = self._reported_steps.setdefault(trial_id, set())
        if step not in reported:  # a trial resumed from a checkpoint re-reports its last step
            revive(self._ot_study, self._ot_trials[trial_id])
            self._ot_trials[trial_id].report(float(value), step)
            reported.add(step)

    def _already_told(self, ot_trial) -> bool:
        finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return any(t.number == ot_trial.number for t in self._ot_study.get_trials(deepcopy=False, states=finished))

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        if trial_id in self._completed_trials or trial_id not in self._ot_trials:
            return
        state = reporting.final_state(result, errored=error)
        if state == reporting.INTERRUPTED:  # not an outcome: the trial continues after --resume (sweep.py parks it)
            return
        ot_trial = self._ot_trials[trial_id]
        revive(self._ot_study, ot_trial)
        if self._already_told(ot_trial):  # told before a driver crash, after Ray's last saved experiment state
            self._completed_trials.add(trial_id)
            return
        if result:  # Ray hands the result that ended the trial (ASHA's stop, the last step) only to this hook
            self._report_intermediate(trial_id, result)
        ot_trial.set_user_attr("ray_trial_id", trial_id)
        ot_trial.set_user_attr("final_state", state)
        if state in reporting.EARLY_STOPPED:
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        elif state == reporting.ERROR:
            self._ot_study.tell(ot_trial, state=TrialState.FAIL)
        else:
            self._ot_study.tell(ot_trial, float(result[self.metric]))
        self._completed_trials.add(trial_id)


def park_interrupted(study_db: Path, study_name: str) -> int:
    """After an interrupted sweep: its RUNNING Optuna trials become WAITING with ``final_state=interrupted``, so the
    study tells the truth (nothing runs) and ``--resume`` continues them (``revive``). Returns how many."""
    storage = optuna.storages.RDBStorage(f"sqlite:///{Path(study_db).resolve()}")
    study = optuna.load_study(study_name=study_name, storage=storage)
    parked = 0
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        storage.set_trial_user_attr(frozen._trial_id, "final_state", reporting.INTERRUPTED)
        storage.set_trial_state_values(frozen._trial_id, state=TrialState.WAITING)
        parked += 1
    return parked


def revive(study: optuna.Study, ot_trial: optuna.Trial) -> None:
    """A trial parked by ``park_interrupted`` runs again after ``--resume``: back to RUNNING before it is used."""
    storage = study._storage
    if storage.get_trial(ot_trial._trial_id).state == TrialState.WAITING:
        storage.set_trial_state_values(ot_trial._trial_id, state=TrialState.RUNNING)
        storage.set_trial_user_attr(ot_trial._trial_id, "final_state", reporting.RUNNING)
