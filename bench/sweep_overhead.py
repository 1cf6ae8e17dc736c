"""Orchestration overhead: sweep wall time / (sum of trial training times / concurrency). Target <= 1.15.

Trial training time is Ray's ``time_total_s`` of each trial (time inside the trainable: building the Run,
training, evaluation, checkpointing); the sweep wall time is Tuner.fit's (summary.json ``wall_seconds``).
Either runs a sweep, or reads the summary.json of one already run (e.g. by bench/demo.py):
  python bench/sweep_overhead.py [--space FILE] [--num-samples 4] [--max-steps 400] [--concurrency 2]
  python bench/sweep_overhead.py --summary results/cbgan-digits-lt/summary.json --concurrency 2
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from sweeps import DEFAULT_SPACE, run_sweep, scratch_dir


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE))
    parser.add_argument("--summary", help="summary.json of a finished sweep (no new sweep is run)")
    parser.add_argument("--num-samples", type=int, default=4)
    parser.add_argument("--max-steps", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=2, help="trials running at once in that sweep")
    args = parser.parse_args()
    if args.summary:
        summary = json.loads(Path(args.summary).read_text())
    else:
        summary, process_wall, _ = run_sweep(args.space, scratch_dir("imbgan-overhead-"), "--num-samples",
                                          str(args.num_samples), "--max-steps", str(args.max_steps),
                                          "--max-concurrent", str(args.concurrency))
        print(f"\nprocess wall {process_wall:.1f} s (Ray start-up, assets and summary included)")
    ideal = sum(t["train_seconds"] for t in summary["trials"]) / args.concurrency
    print(f"sum of trial times / {args.concurrency}: {ideal:.1f} s; Tuner.fit wall {summary['wall_seconds']:.1f} s")
    print(f"overhead ratio: {summary['wall_seconds'] / ideal:.3f}  (target <= 1.15)")


if __name__ == "__main__":
    main()
