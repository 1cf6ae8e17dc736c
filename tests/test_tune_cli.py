"""The sweep CLI's override flags, checked through ``--dry-run`` (nothing starts): ``--set`` and ``--grace-period``."""
from __future__ import annotations

import subprocess
import sys

from helpers_sweep import REPO, write_space


def dry_run(space, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainables.tune", "--space", str(space), "--dry-run", *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_set_and_grace_period_reach_the_plan(tmp_path):
    space = write_space(tmp_path / "s.yaml", search={"num_samples": 2,
                                                     "scheduler": {"asha": {"grace_period": 20, "reduction_factor": 2}}})
    proc = dry_run(space, "--set", "search.num_samples=3", "--set", "run.train.steps=80", "--grace-period", "40")
    assert proc.returncode == 0, proc.stderr
    assert "rungs at [40]" in proc.stdout and "3 x up to 80 steps" in proc.stdout, proc.stdout


def test_grace_period_on_a_fifo_space_is_refused(tmp_path):
    space = write_space(tmp_path / "f.yaml", search={"scheduler": "fifo"})
    proc = dry_run(space, "--grace-period", "40")
    assert proc.returncode == 2 and "--grace-period 40: search.scheduler is not asha" in proc.stderr, proc.stderr


def test_malformed_set_item_names_it(tmp_path):
    proc = dry_run(write_space(tmp_path / "s.yaml"), "--set", "run.train.lr_g")
    assert proc.returncode == 2 and "'run.train.lr_g'" in proc.stderr, proc.stderr
