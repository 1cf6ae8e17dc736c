"""bench/eval_noise.py's bookkeeping: the real sets it deals are disjoint and balanced, and its tables compute the
sds and the ordering agreement they claim (checked on scores built so that each answer is known)."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from imbgan_core.data.types import ImageDataset

BENCH = Path(__file__).resolve().parents[1] / "bench" / "eval_noise.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("eval_noise_bench", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _split(per_class: list[int]) -> ImageDataset:
    labels = torch.cat([torch.full((n,), k) for k, n in enumerate(per_class)])
    images = torch.arange(len(labels), dtype=torch.int32).view(-1, 1, 1, 1)  # image i holds its own index
    return ImageDataset(images, labels, [str(k) for k in range(len(per_class))])


def test_real_sets_are_disjoint_balanced_and_their_union_is_every_dealt_image(bench):
    sets = bench.real_sets(_split([95, 90, 120]), per_class=30, count=3)
    assert sorted(sets) == ["set0", "set1", "set2", "union"]
    seen = set()
    for name in ("set0", "set1", "set2"):
        assert sets[name].counts() == [30, 30, 30]
        ids = set(sets[name].images.flatten().tolist())
        assert not ids & seen
        seen |= ids
    assert set(sets["union"].images.flatten().tolist()) == seen
    assert sets["union"].counts() == [90, 90, 90]


def test_real_sets_refuse_a_class_without_room_for_every_set(bench):
    with pytest.raises(SystemExit, match=r"classes \[1\] have fewer than 60"):
        bench.real_sets(_split([60, 59]), per_class=30, count=2)


def _raw(latent_shift: float, set_shift: float, gaps: list[float]) -> dict:
    """Scores = generator gap + set_shift x set index + latent_shift x (+1, -1, ...) per latent seed."""
    latent = latent_shift * np.array([1.0, -1.0, 1.0, -1.0])
    return {f"G{g}": {"50": {f"set{s}": {"intra_fid": list(10 + gap + set_shift * s + latent)} for s in range(3)}}
            for g, gap in enumerate(gaps)}


def _row(lines: list[str], index: int = 2) -> list[str]:
    return [cell.strip() for cell in lines[index].strip("|").split("|")]


def test_noise_table_separates_latent_real_set_and_training_noise(bench):
    raw = _raw(latent_shift=0.5, set_shift=2.0, gaps=[0.0, 3.0])
    row = _row(bench.noise_table(raw, ["intra_fid"], [50], ["set0", "set1", "set2"]))
    latent_sd = np.std([0.5, -0.5, 0.5, -0.5], ddof=1)
    assert float(row[3]) == pytest.approx(latent_sd, rel=1e-3)
    assert float(row[4]) == pytest.approx(2.0, rel=1e-3)  # sd of 0, 2, 4
    assert float(row[5]) == pytest.approx(np.std([0.0, 3.0], ddof=1), rel=1e-3)


def test_a_shared_real_set_shift_leaves_the_gap_alone(bench):
    raw = _raw(latent_shift=0.0, set_shift=2.0, gaps=[0.0, 3.0])
    row = _row(bench.comparison_table(raw, ["intra_fid"], [50], ["set0", "set1", "set2"]))
    assert row[2] == "G0 - G1" and float(row[3]) == pytest.approx(-3.0)
    assert float(row[4]) == 0.0 and row[6] == "100%"


def test_ordering_agreement_counts_the_evaluations_that_flip_the_pair(bench):
    raw = _raw(latent_shift=0.0, set_shift=0.0, gaps=[0.0, 1.0])
    raw["G1"]["50"]["set2"]["intra_fid"] = [9.5, 9.5, 9.5, 9.5]  # G1 better on one real set of three
    row = _row(bench.comparison_table(raw, ["intra_fid"], [50], ["set0", "set1", "set2"]))
    assert row[6] == "67%"
