"""Search efficiency: ASHA + TPE vs FIFO + random search, same num_samples and max steps, on the default space.

Prints each sweep's best intra-FID (at its full budget) and the total training steps spent.
Target (issue #5): ASHA + TPE within 5 % of FIFO's best at <= 40 % of its steps.
Usage: python bench/search_efficiency.py [--space FILE] [--num-samples 8] [--max-steps 1200] [--seed 0]
"""
from __future__ import annotations

import argparse

from sweeps import DEFAULT_SPACE, run_sweep, scratch_dir, usable, variant


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", default=str(DEFAULT_SPACE))
    parser.add_argument("--num-samples", type=int, default=8)
    parser.add_argument("--max-steps", type=int, default=None, help="default: the space's run.train.steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    folder = scratch_dir("imbgan-efficiency-")
    flags = ["--num-samples", str(args.num_samples), "--seed", str(args.seed)]
    if args.max_steps:
        flags += ["--max-steps", str(args.max_steps)]
    variants = {
        "asha_tpe": variant(args.space, {"search.searcher": {"optuna": {"sampler": "tpe", "seed": args.seed}}},
                            "asha-tpe", folder),
        "fifo_random": variant(args.space, {"search.scheduler": "fifo",
                                            "search.searcher": {"optuna": {"sampler": "random", "seed": args.seed}}},
                               "fifo-random", folder),
    }
    found = {}
    for label, space in variants.items():
        summary, wall = run_sweep(space, folder / label, *flags)
        full = [t for t in usable(summary) if t["state"] == "completed"]
        found[label] = (full[0]["metrics"][summary["metric"]], summary["total_steps"], wall)
        print(f"\n{label}: best {summary['metric']} {found[label][0]:.3f} (full budget), "
              f"{found[label][1]} training steps, {wall:.0f} s")
    (a_best, a_steps, _), (f_best, f_steps, _) = found["asha_tpe"], found["fifo_random"]
    print(f"ASHA+TPE best / FIFO+random best: {a_best / f_best:.3f}  (target <= 1.05)")
    print(f"ASHA+TPE steps / FIFO+random steps: {a_steps / f_steps:.3f}  (target <= 0.40)")


if __name__ == "__main__":
    main()
