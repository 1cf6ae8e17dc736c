"""Replay ASHA offline on the full trajectories of a FIFO sweep: what each (grace period, reduction factor) would
have cost and found, without training again. Use it to choose ``search.scheduler.asha`` for a space.

Input: a FIFO sweep folder (its ``optuna.db`` holds every evaluation of every trial at its training step), e.g. the
``fifo_random/<name>`` folder that bench/search_efficiency.py leaves. For each setting, the trials arrive in many
random orders, one at a time; a trial reaching a rung continues only if its value is within the best 1/rf of the
values recorded at that rung so far, the first one always continues (Ray's AsyncHyperBandScheduler rule, minimising).
Prints, per setting: the steps spent relative to FIFO, the mean ratio of the best full-budget value found to FIFO's
best, and how often that ratio is <= 1.05; then the rank correlation of each step's value with the final one.
Usage: python bench/asha_replay.py SWEEP_DIR [--settings 200:3 400:3 ...] [--orders 2000]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from search_efficiency import rank_correlations


def trajectories(sweep_dir: Path) -> tuple[list[dict[int, float]], int]:
    """Every full-budget trial's {step: value}, and the budget."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    trials = [t.intermediate_values for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    budget = max(max(t) for t in trials)
    return [t for t in trials if budget in t], budget


def replay(trials: list[dict[int, float]], order, rungs: list[int], rf: float, budget: int) -> tuple[float, int]:
    """(best full-budget value, steps spent) of ASHA over ``trials`` arriving in ``order``."""
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    best, spent = np.inf, 0
    for i in order:
        values, stopped_at = trials[i], None
        for rung in rungs:
            earlier = recorded[rung]
            cutoff = np.percentile(earlier, 100 / rf) if earlier else None
            earlier.append(values[rung])
            if cutoff is not None and values[rung] > cutoff:
                stopped_at = rung
                break
        spent += stopped_at or budget
        if stopped_at is None:
            best = min(best, values[budget])
    return best, spent


def asha_rungs(grace: int, rf: float, budget: int) -> list[int]:
    rungs, rung = [], grace
    while rung < budget:
        rungs.append(int(rung))
        rung *= rf
    return rungs


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("--settings", nargs="+", default=["200:3", "200:2", "400:3", "400:4", "600:2"],
                        help="grace_period:reduction_factor pairs")
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    trials, budget = trajectories(args.sweep_dir)
    if len(trials) < 3:
        raise SystemExit(f"{args.sweep_dir}: {len(trials)} full-budget trials; a FIFO sweep with several is needed")
    fifo_best, fifo_steps = min(t[budget] for t in trials), budget * len(trials)
    rng = np.random.default_rng(args.seed)
    print(f"{len(trials)} FIFO trials of {budget} steps, best {fifo_best:.3f}; {args.orders} arrival orders each")
    print(f"{'grace:rf':>9}  {'rungs':<16} {'steps / FIFO':>12}  {'best / FIFO best':>16}  {'P(<= 1.05)':>10}")
    for setting in args.settings:
        grace, rf = setting.split(":")
        rungs = asha_rungs(int(grace), float(rf), budget)
        missing = [r for r in rungs if any(r not in t for t in trials)]
        if missing:
            print(f"{setting:>9}  rungs {missing} fall between evaluations of this sweep: skipped")
            continue
        runs = [replay(trials, rng.permutation(len(trials)), rungs, float(rf), budget) for _ in range(args.orders)]
        ratios = np.array([best for best, _ in runs]) / fifo_best
        steps = np.array([spent for _, spent in runs]) / fifo_steps
        print(f"{setting:>9}  {str(rungs):<16} {steps.mean():>12.3f}  {ratios.mean():>16.3f}  "
              f"{(ratios <= 1.05).mean():>10.2f}")
    print("rank correlation with the final value: " + ", ".join(
        f"step {step}: {rho:.2f}" for step, rho in rank_correlations(args.sweep_dir).items()))


if __name__ == "__main__":
    main()
