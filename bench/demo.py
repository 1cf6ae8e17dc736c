"""``make demo`` measured: wall time of the default cbgan sweep and its best vs worst trial.

Usage: python bench/demo.py [--space search_spaces/cbgan.yaml] [--results DIR] [extra CLI flags...]
Target (issue #5): <= 10 minutes on 2 cores after set-up (assets cached by a first run).
"""
from __future__ import annotations

import argparse

from sweeps import DEFAULT_SPACE, run_sweep, scratch_dir, usable


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE))
    parser.add_argument("--results", default=None, help="results root (default: a fresh temporary folder)")
    args, extra = parser.parse_known_args()
    results = args.results or scratch_dir("imbgan-demo-")
    summary, wall, _ = run_sweep(args.space, results, *extra)
    trials = usable(summary)
    metric = summary["metric"]
    print(f"\ndemo: {len(summary['trials'])} trials, states {summary['states']}")
    print(f"wall time: {wall:.1f} s (process), {summary['wall_seconds']:.1f} s (Tuner.fit); "
          f"{summary['total_steps']} training steps")
    for label, trial in (("best", trials[0]), ("worst", trials[-1])):
        m = trial["metrics"]
        print(f"{label:5s} trial {trial['trial_id']} ({trial['state']}, {trial['steps']} steps): "
              f"{metric}={m.get(metric, float('nan')):.3f} class_accuracy={m.get('class_accuracy', float('nan')):.3f}"
              f"  config {trial['config']}")


if __name__ == "__main__":
    main()
