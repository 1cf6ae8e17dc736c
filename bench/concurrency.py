"""Concurrency: 2 concurrent 1-CPU trials vs 1 trial at a time on 2 cores. Target throughput ratio >= 1.7.

The same FIFO sweep (no early stopping, so both runs train the same steps) runs twice, with --max-concurrent 1
and 2; throughput = training steps / Tuner.fit wall time. Each trial sets torch threads to its 1-CPU share, so
two trials must not oversubscribe the cores.
Usage: python bench/concurrency.py [--space FILE] [--trials 2] [--max-steps 400]
"""
from __future__ import annotations

import argparse

from sweeps import DEFAULT_SPACE, run_sweep, scratch_dir, variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE))
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=400)
    args = parser.parse_args()
    folder = scratch_dir("imbgan-concurrency-")
    space = variant(args.space, {"search.scheduler": "fifo"}, "concurrency", folder)
    throughput = {}
    for concurrent in (1, 2):
        summary, _ = run_sweep(space, folder / f"c{concurrent}", "--num-samples", str(args.trials), "--max-steps",
                               str(args.max_steps), "--max-concurrent", str(concurrent), "--cpus-per-trial", "1")
        throughput[concurrent] = summary["total_steps"] / summary["wall_seconds"]
        print(f"\nmax concurrent {concurrent}: {summary['total_steps']} steps in {summary['wall_seconds']:.1f} s "
              f"= {throughput[concurrent]:.1f} steps/s")
    print(f"throughput ratio 2 vs 1: {throughput[2] / throughput[1]:.2f}  (target >= 1.7)")


if __name__ == "__main__":
    main()
