"""Search efficiency: ASHA + TPE vs FIFO + random search on the default space, at equal trial count or equal budget.

Equal budget (issue #15, ``--budget-steps N --seeds 0 1 2``): each sweep runs trials until its trials have trained
N steps in all (trainables.budget); printed per seed and arm: the best full-budget score, trials, steps spent; then
mean ± sd over seeds, and ``search_efficiency_budget.png`` with every seed's anytime curve and their mean.
Equal trial count (the default, below):

Prints each sweep's best intra-FID at the full budget and the total training steps spent, and draws
``search_efficiency.png``: best full-budget intra-FID so far against training steps spent, trials in the order
they finished (read from each sweep's Optuna study, which records every evaluation at its training step).
Target (issue #5): ASHA + TPE within 5 % of FIFO's best at <= 40 % of its steps. Also printed, from the same
curves: the steps each sweep had spent when its best first came within 5 % of FIFO's final best (time to target).
The TPE variant keeps the space's searcher settings (start-up length included) and only sets the seed; the
baseline replaces the searcher with Optuna's RandomSampler and the scheduler with FIFO.
Usage: python bench/search_efficiency.py [--space FILE] [--num-samples 16] [--max-steps N] [--seed 0] [--out DIR]
       python bench/search_efficiency.py --budget-steps 6000 [--seeds 0 1 2] [--space FILE] [--out DIR]
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


def mean_curve(curves: list[list[tuple[int, float]]], grid: list[int]) -> list[float | None]:
    """Best-so-far of each seed's curve at every grid point (a step function), averaged over the seeds that have a
    value there (None until every seed has one: a mean over fewer seeds would mix in a different population)."""
    out = []
    for x in grid:
        values = []
        for curve in curves:
            known = [b for s, b in curve if s <= x and b is not None]
            values.append(known[-1] if known else None)
        out.append(None if any(v is None for v in values) else sum(values) / len(values))
    return out


def plot_budget(curves: dict[str, list[list[tuple[int, float]]]], metric: str, budget: int, path: Path) -> None:
    """Each seed's anytime curve (thin) and their mean (thick) per arm, at equal step budget."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4))
    grid = list(range(0, budget + budget // 40 + 1, max(1, budget // 200)))
    for (label, per_seed), color in zip(curves.items(), ("tab:blue", "tab:orange")):
        for curve in per_seed:
            points = [(s, b) for s, b in curve if b is not None]
            if points:
                ax.step([s for s, _ in points], [b for _, b in points], where="post", color=color, alpha=0.3, lw=1)
        mean = mean_curve(per_seed, grid)
        ax.plot([x for x, m in zip(grid, mean) if m is not None], [m for m in mean if m is not None], color=color,
                lw=2.5, label=f"{LABELS[label]} (mean of {len(per_seed)} seeds)")
    ax.axvline(budget, color="grey", ls=":", lw=1)
    ax.set_xlabel("training steps spent (all trials)")
    ax.set_ylabel(f"best full-budget {metric} so far")
    ax.set_title(f"Equal budget: {budget} training steps per sweep")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def mean_std(values: list[float]) -> str:
    import statistics

    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def variants_for(space: str, seed: int, folder: Path) -> dict[str, Path]:
    return {
        "asha_tpe": variant(space, {"search.searcher.optuna.seed": seed}, f"asha-tpe-s{seed}", folder),
        "fifo_random": variant(space, {"search.scheduler": "fifo",
                                       "search.searcher": {"optuna": {"sampler": "random", "seed": seed}}},
                               f"fifo-random-s{seed}", folder),
    }


def equal_budget(args, folder: Path) -> None:
    """Issue #15 item 1: both arms get the same ``--budget-steps`` (trials until it is spent), over ``--seeds``."""
    flags = ["--budget-steps", str(args.budget_steps)] + (["--max-steps", str(args.max_steps)] if args.max_steps
                                                          else [])
    best: dict[str, list[float]] = {"asha_tpe": [], "fifo_random": []}
    curves: dict[str, list] = {"asha_tpe": [], "fifo_random": []}
    rows = []
    for seed in args.seeds:
        for label, space in variants_for(args.space, seed, folder).items():
            summary, wall, sweep_dir = run_sweep(space, folder / f"{label}_s{seed}", *flags, "--seed", str(seed))
            full = [t for t in summary["trials"] if t["state"] == "completed" and summary["metric"] in t["metrics"]]
            value = full[0]["metrics"][summary["metric"]] if full else float("nan")
            best[label].append(value)
            curves[label].append(best_so_far(sweep_dir, summary["max_budget"], summary["mode"]))
            rows.append((seed, label, value, len(summary["trials"]), len(full), summary["budget"]["steps_spent"],
                         summary["states"], wall))
    metric = summary["metric"]
    print(f"\n| seed | arm | best full-budget {metric} | trials | completed | steps spent | states | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for seed, label, value, n, full, spent, states, wall in rows:
        states_text = ", ".join(f"{k} {v}" for k, v in states.items() if v)
        print(f"| {seed} | {LABELS[label]} | {value:.3f} | {n} | {full} | {spent} | {states_text} | {wall:.0f} |")
    ratios = [a / f for a, f in zip(best["asha_tpe"], best["fifo_random"])]
    n = len(args.seeds)
    print(f"\nbest {metric} at {args.budget_steps} steps (mean ± sd over {n} seeds): ASHA + TPE "
          f"{mean_std(best['asha_tpe'])}, FIFO + random {mean_std(best['fifo_random'])}; "
          f"per-seed ratio ASHA+TPE / FIFO+random {mean_std(ratios)}")
    picture = folder / "search_efficiency_budget.png"
    plot_budget(curves, metric, args.budget_steps, picture)
    print(f"plot: {picture}")


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE))
    parser.add_argument("--num-samples", type=int, default=16,
                        help="trials per sweep; more than TPE's start-up plus concurrency, so TPE gets to act")
    parser.add_argument("--max-steps", type=int, default=None, help="default: the space's run.train.steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-steps", type=int, default=None,
                        help="equal-budget mode: each sweep runs trials until it has trained this many steps")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="equal-budget mode: searcher seeds")
    parser.add_argument("--out", default=None, help="folder for the sweeps and the plot (default: a new temp dir)")
    args = parser.parse_args()
    folder = Path(args.out) if args.out else scratch_dir("imbgan-efficiency-")
    folder.mkdir(parents=True, exist_ok=True)
    if args.budget_steps:
        equal_budget(args, folder)
        return
    flags = ["--num-samples", str(args.num_samples), "--seed", str(args.seed)]
    if args.max_steps:
        flags += ["--max-steps", str(args.max_steps)]
    variants = variants_for(args.space, args.seed, folder)
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
