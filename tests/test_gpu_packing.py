"""Fractional GPU packing: 4 trials at 0.25 GPU share one (logical) GPU at the same time and fall back to CPU.

``ray.init(num_gpus=1)`` declares a GPU without hardware (docs/reference.md#ray-logical-gpus), so Ray's packing is
real while the
trainable finds no CUDA device and trains on the CPU. The CLI runs in-process against that runtime.
"""
from __future__ import annotations

import copy
import shutil

import pytest
import ray
import torch

from helpers_sweep import TINY_RUN, ray_results, short_tmpdir, write_space
from trainables.tune import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def one_logical_gpu():
    tmp = short_tmpdir("imbgpu")
    ray.init(num_cpus=4, num_gpus=1, include_dashboard=False, _temp_dir=str(tmp), logging_level="ERROR")
    yield
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


def test_four_quarter_gpu_trials_run_concurrently_on_cpu(one_logical_gpu, tmp_path):
    run = copy.deepcopy(TINY_RUN)
    run["train"].update({"steps": 40, "eval_every": 20})
    space = write_space(tmp_path / "space.yaml", name="packing", run=run,
                        search={"num_samples": 4, "scheduler": "fifo"},
                        resources={"cpus_per_trial": 1, "gpus_per_trial": "auto", "max_concurrent": 4})
    results = tmp_path / "results"
    assert main(["--space", str(space), "--results", str(results)]) == 0

    reports = ray_results(results / "packing")
    assert len(reports) == 4
    expected_device = "cuda" if torch.cuda.is_available() else "cpu"
    for rows in reports.values():
        assert {r["gpu_share"] for r in rows} == {0.25}  # 'auto' resolved to a quarter GPU
        assert {r["device"] for r in rows} == {expected_device}
        assert {r["torch_threads"] for r in rows} == {1}  # 1 CPU per trial: no oversubscription
    starts = [rows[0]["started_at"] for rows in reports.values()]
    ends = [rows[-1]["timestamp"] for rows in reports.values()]
    assert max(starts) < min(ends), "the 4 trials did not all run at the same time"
