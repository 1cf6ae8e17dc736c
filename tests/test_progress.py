"""What a researcher sees while a sweep runs (issue #16, item 4): Ray's live table with real Ray objects."""
from __future__ import annotations

import copy
import re
import shutil
import tempfile

import numpy as np
import pytest
import ray
from ray.train._internal.storage import StorageContext
from ray.tune.experiment import Trial

from trainables import reporting
from trainables.durable import PersistentASHA
from trainables.progress import StepRate, SweepReporter, sweep_progress


def trial(trial_id: str, status: str, step: int, state: str, done: bool = False, storage=None) -> Trial:
    t = Trial("train_gan", config={"method.lambda": 1.0}, trial_id=trial_id, stub=True, storage=storage)
    if storage is not None:
        t.storage = copy.copy(storage)
        t.storage.trial_dir_name = f"train_gan_{trial_id}"
    t.set_status(status)
    t.update_last_result({reporting.STEP: step, reporting.STATE: state, "intra_fid": 40.0,
                          **({"done": True} if done else {})})
    return t


def some_trials(storage=None) -> list[Trial]:
    return [trial("t1", Trial.TERMINATED, 60, reporting.COMPLETED, storage=storage),
            trial("t2", Trial.TERMINATED, 20, reporting.RUNNING, done=True, storage=storage),  # ASHA stopped it
            trial("t3", Trial.RUNNING, 40, reporting.RUNNING, storage=storage)]


def test_asha_rungs_show_the_metric_not_its_negation(tmp_path):
    """Ray's own line read ``Iter 20.000: -44.2`` for intra-FID (mode min)."""
    asha = PersistentASHA(tmp_path / "asha_state.json", time_attr="step", metric="intra_fid", mode="min", max_t=60,
                          grace_period=20, reduction_factor=3)
    for trial_id, fid in (("a", 41.3), ("b", 50.0)):
        t = Trial("train_gan", config={}, trial_id=trial_id, stub=True)
        asha.on_trial_add(None, t)
        asha.on_trial_result(None, t, {"step": 20, "intra_fid": fid})
    text = asha.debug_string()
    cutoff = -np.nanpercentile([-41.3, -50.0], (1 - 1 / 3) * 100)  # ASHA's cutoff, in intra-FID units
    assert f"step 20: {cutoff:.4g} (2 seen)" in text and "at most" in text, text
    assert not re.search(r": -\d", text) and "Iter" not in text, text


def test_progress_line_counts_states_pace_and_eta():
    rate = StepRate()
    rate.observe(60, now=100.0)
    line = sweep_progress(some_trials(), total=5, budget=60, rate=rate, early_stopping=True, now=110.0)
    # 120 steps in 10 s; left: 2 unstarted x 60 + 20 for t3 = 140 steps = 23 s, at most (ASHA may stop trials)
    assert line == "trials: 2/5 done (1 completed, 1 stopped_by_asha), 1 running, 2 pending | 6.00 steps/s | ETA <= 23s"
    fresh = sweep_progress(some_trials(), total=5, budget=60, rate=StepRate(), early_stopping=False, now=0.0)
    assert fresh.endswith("| ? steps/s | ETA ?")


def test_progress_line_with_a_step_budget():
    """A budget-bound sweep (Ray's num_samples -1 becomes sys.maxsize) has no trial count: ``?``; the ETA is the
    budget's rest at the pace seen: 200 - 120 steps spent = 80 steps at 6 steps/s."""
    import sys

    rate = StepRate()
    rate.observe(60, now=100.0)
    line = sweep_progress(some_trials(), total=sys.maxsize, budget=60, rate=rate, early_stopping=False, now=110.0,
                          step_budget=200)
    assert line == ("trials: 2/? done (1 completed, 1 stopped_by_asha), 1 running, 0 pending | 6.00 steps/s | "
                    "budget: 120/200 steps | ETA <= 13s")


@pytest.fixture()
def local_ray():
    """Ray's session folder (what its ``Result logdir`` line names) exists only in a started Ray."""
    tmp = tempfile.mkdtemp(prefix="imbpr", dir="/tmp")  # short: Ray's socket paths must stay < 108 chars
    ray.init(num_cpus=1, include_dashboard=False, _temp_dir=tmp, logging_level="ERROR")
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_live_table_names_the_sweep_folder_not_rays_session_folder(tmp_path, local_ray, monkeypatch):
    from ray.tune.utils import log
    monkeypatch.setattr(log, "verbosity", log.Verbosity.V1_EXPERIMENT)  # the sweep's verbose=1 (an earlier
    # Tuner in this process may have set 0, which hides the table and its "Result logdir" line)
    reporter = SweepReporter("intra_fid", ["method.lambda"], tmp_path / "my-sweep", budget=60, early_stopping=True)
    reporter.setup(start_time=0.0, total_samples=5)
    trials = some_trials(StorageContext(str(tmp_path / "ray"), "my-sweep"))
    assert trials[0].local_experiment_path  # what Ray's line names: its session folder
    text = reporter.progress_text(trials, False, "ASHA: 1 trial(s) stopped")
    assert "Result logdir" not in text and trials[0].local_experiment_path not in text, text
    assert text.count(f"Results: {tmp_path / 'my-sweep'}") == 1, text
    assert text.splitlines()[2].startswith("trials: 2/5 done (1 completed, 1 stopped_by_asha), 1 running, 2 pending")
