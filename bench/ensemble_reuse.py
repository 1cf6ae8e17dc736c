"""Training steps of one ensemble sweep without and with member reuse (issue #16 item 6; goal: <= 0.6x).

Runs the same space twice through the CLI, in fresh results folders (so each starts with an empty member cache):
once with ``run.ensemble.reuse_members: false`` (every trial trains all its members, as before) and once with
reuse. Both runs use the same searcher seed; reuse is exact (tests/test_member_cache.py), so the two sweeps train
the same trials to the same scores unless ASHA saw reports in another order. The script says whether the trial
lists matched, and prints steps trained (summary.json ``total_steps_trained``) for both and their ratio.
Usage: python bench/ensemble_reuse.py [--space search_spaces/ensemble.yaml] [--max-steps 200] [--grace-period 300]
       [--num-samples 6] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sweeps import REPO, run_sweep, scratch_dir


def trial_signature(summary: dict) -> list[tuple]:
    """(searched config, state, steps, metric) per trial, order-free: equal lists mean the same trials."""
    metric = summary["metric"]
    return sorted((json.dumps(t["config"], sort_keys=True), t["state"], t["steps"],
                   round(t["metrics"].get(metric, float("nan")), 6)) for t in summary["trials"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], allow_abbrev=False)
    p.add_argument("--space", default=str(REPO / "search_spaces" / "ensemble.yaml"))
    p.add_argument("--max-steps", type=int, default=200, help="steps per member (run.train.steps)")
    p.add_argument("--grace-period", type=int, default=300, help="ASHA's first rung (inside member 1 by default)")
    p.add_argument("--num-samples", type=int, default=6)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    out = args.out or scratch_dir("imbgan-ensemble-reuse-")
    flags = ["--max-steps", str(args.max_steps), "--grace-period", str(args.grace_period),
             "--num-samples", str(args.num_samples)]
    runs = {}
    for label, reuse in (("without reuse", "false"), ("with reuse", "true")):
        summary, wall, folder = run_sweep(Path(args.space), out / label.replace(" ", "_"), *flags,
                                          "--set", f"run.ensemble.reuse_members={reuse}")
        runs[label] = (summary, wall, folder)
    before, after = runs["without reuse"][0], runs["with reuse"][0]
    print("\n| run | trials | steps reached (sum of step) | steps trained | wall s |")
    print("|---|---|---|---|---|")
    for label, (summary, wall, folder) in runs.items():
        print(f"| {label} | {len(summary['trials'])} | {summary['total_steps']} | {summary['total_steps_trained']} "
              f"| {wall:.0f} |")
    same = trial_signature(before) == trial_signature(after)
    print(f"\nsame trials, states, steps and {before['metric']} in both runs: {same}")
    print(f"steps trained with reuse / without: {after['total_steps_trained'] / before['total_steps_trained']:.2f}x"
          f" ({after['total_steps_trained']} / {before['total_steps_trained']})")
    print(f"folders: {out}")


if __name__ == "__main__":
    main()
