"""Search efficiency: ASHA + TPE vs FIFO + random search, same num_samples and max steps, on the default space.

Prints each sweep's best intra-FID at the full budget and the total training steps spent, and draws
``search_efficiency.png``: best full-budget intra-FID so far against training steps spent, trials in the order
they finished (read from each sweep's Optuna study, which records every evaluation at its training step).
Target (issue #5): ASHA + TPE within 5 % of FIFO's best at <= 40 % of its steps. Also printed, from the same
curves: the steps each sweep had spent when its best first came within 5 % of FIFO's final best (time to target).
The TPE variant keeps the space's searcher settings (start-up length included) and only sets the seed; the
baseline replaces the searcher with Optuna's RandomSampler and the scheduler with FIFO.
Usage: python bench/search_efficiency.py [--space FILE] [--num-samples 16] [--max-steps N] [--seed 0] [--out DIR]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import optuna
from optuna.trial import TrialState

from sweeps import DEFAULT_SPACE, run_sweep, scratch_dir, variant

LABELS = {"asha_tpe": "ASHA + TPE", "fifo_random": "FIFO + random"}


def best_so_far(sweep_dir: Path, full_budget: int, mode: str) -> list[tuple[int, float]]:
    """(cumulative steps, best full-budget value so far) after each finished trial, in finishing order."""
    storage = f"sqlite:///{sweep_dir / 'optuna.db'}"
    study = optuna.load_study(study_name=sweep_dir.name, storage=storage)
    finished = [t for t in study.get_trials(deepcopy=False) if t.datetime_complete is not None]
    spent, best, curve = 0, None, []
    for trial in sorted(finished, key=lambda t: t.datetime_complete):
        steps = max(trial.intermediate_values, default=0)
        spent += steps
        if trial.state == TrialState.COMPLETE and steps >= full_budget and trial.value is not None:
            better = best is None or (trial.value < best if mode == "min" else trial.value > best)
            best = trial.value if better else best
        curve.append((spent, best))
    return curve


def steps_to_reach(curve: list[tuple[int, float]], target: float, mode: str) -> int | None:
    """Cumulative steps at which the best-so-far first reached ``target`` (None: never)."""
    for spent, best in curve:
        if best is not None and (best <= target if mode == "min" else best >= target):
            return spent
    return None


def rank_correlations(sweep_dir: Path) -> dict[int, float]:
    """Spearman correlation, over the full-budget trials, of the metric at each evaluation step with the final value:
    how early a rung may sit and still rank trials as their full training would (choosing ``grace_period``)."""
    from scipy.stats import spearmanr

    study = optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    full = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.intermediate_values]
    if len(full) < 3:
        return {}
    steps = sorted(set.intersection(*(set(t.intermediate_values) for t in full)))
    return {s: float(spearmanr([t.intermediate_values[s] for t in full], [t.value for t in full]).statistic)
            for s in steps}


def plot(curves: dict[str, list[tuple[int, float]]], metric: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, curve in curves.items():
        points = [(s, b) for s, b in curve if b is not None]
        if points:
            ax.step([s for s, _ in points], [b for _, b in points], where="post", marker="o", label=LABELS[label])
    ax.set_xlabel("training steps spent (all trials)")
    ax.set_ylabel(f"best full-budget {metric} so far")
    ax.set_title("Search efficiency on the default space")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE))
    parser.add_argument("--num-samples", type=int, default=16,
                        help="trials per sweep; more than TPE's start-up plus concurrency, so TPE gets to act")
    parser.add_argument("--max-steps", type=int, default=None, help="default: the space's run.train.steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="folder for the sweeps and the plot (default: a new temp dir)")
    args = parser.parse_args()
    folder = Path(args.out) if args.out else scratch_dir("imbgan-efficiency-")
    folder.mkdir(parents=True, exist_ok=True)
    flags = ["--num-samples", str(args.num_samples), "--seed", str(args.seed)]
    if args.max_steps:
        flags += ["--max-steps", str(args.max_steps)]
    variants = {
        "asha_tpe": variant(args.space, {"search.searcher.optuna.seed": args.seed}, "asha-tpe", folder),
        "fifo_random": variant(args.space, {"search.scheduler": "fifo",
                                            "search.searcher": {"optuna": {"sampler": "random", "seed": args.seed}}},
                               "fifo-random", folder),
    }
    found, curves, sweep_dirs = {}, {}, {}
    for label, space in variants.items():
        summary, wall, sweep_dir = run_sweep(space, folder / label, *flags)
        full = [t for t in summary["trials"] if t["state"] == "completed" and summary["metric"] in t["metrics"]]
        found[label] = (full[0]["metrics"][summary["metric"]], summary["total_steps"], wall)
        curves[label] = best_so_far(sweep_dir, summary["max_budget"], summary["mode"])
        sweep_dirs[label] = sweep_dir
        print(f"\n{label}: best {summary['metric']} {found[label][0]:.3f} (full budget, {len(full)} trials "
              f"completed), {found[label][1]} training steps, states {summary['states']}, {wall:.0f} s")
    (a_best, a_steps, _), (f_best, f_steps, _) = found["asha_tpe"], found["fifo_random"]
    picture = folder / "search_efficiency.png"
    plot(curves, summary["metric"], picture)
    print("rank correlation of the metric at each step with the final value (FIFO trials): "
          + ", ".join(f"{step}: {rho:.2f}" for step, rho in rank_correlations(sweep_dirs["fifo_random"]).items()))
    print(f"ASHA+TPE best / FIFO+random best: {a_best / f_best:.3f}  (target <= 1.05)")
    print(f"ASHA+TPE steps / FIFO+random steps: {a_steps / f_steps:.3f}  (target <= 0.40)")
    target = f_best * 1.05 if summary["mode"] == "min" else f_best / 1.05
    for label, curve in curves.items():
        reached = steps_to_reach(curve, target, summary["mode"])
        when = f"{reached} steps ({reached / f_steps:.3f} of FIFO's total)" if reached is not None else "never"
        print(f"{label}: best within 5 % of FIFO's final best after {when}")
    print(f"plot: {picture}")


if __name__ == "__main__":
    main()
