"""Accuracy and training time of the annotator and the long-tailed classifier C on digits-LT.

    .venv/bin/python bench/classifier_accuracy.py                     # rho 10, 16x16, config defaults
    .venv/bin/python bench/classifier_accuracy.py --epochs 10 20 30 --threads 2

Trains into a fresh temporary cache (never a cache hit) and prints, per role and epoch budget, the held-out
accuracy on the balanced evaluation split (overall and many / medium / few) and the seconds taken.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile

from imbgan_core.classifier import ROLES, get_classifier
from imbgan_core.config import RunConfig
from imbgan_core.data import load_dataset


def main() -> None:
    defaults = RunConfig()
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--ratio", type=float, default=10.0)
    p.add_argument("--resolution", type=int, default=16, choices=(8, 16, 32))
    p.add_argument("--epochs", type=int, nargs="+", default=[defaults.classifier.epochs])
    p.add_argument("--seeds", type=int, nargs="+", default=[defaults.classifier.seed])
    p.add_argument("--threads", type=int, default=defaults.classifier.threads, help="classifier.threads")
    p.add_argument("--entropy-bonus", type=float, default=defaults.classifier.entropy_bonus)
    args = p.parse_args()

    cfg = RunConfig.from_dict({"dataset": {"resolution": args.resolution, "imbalance": {"ratio": args.ratio}},
                               "classifier": {"entropy_bonus": args.entropy_bonus, "threads": args.threads}})
    data = load_dataset(cfg.dataset)
    print(f"digits-LT rho={args.ratio:g} {args.resolution}x{args.resolution}: train {data.train.counts()}, "
          f"eval {len(data.eval)} images, {args.threads} thread(s)")
    print(f"{'role':<11} {'epochs':>6} {'seed':>4} {'overall':>8} {'many':>6} {'medium':>7} {'few':>6} {'seconds':>8}")
    with tempfile.TemporaryDirectory() as cache:
        for epochs in args.epochs:
            for seed in args.seeds:
                clf_cfg = dataclasses.replace(cfg.classifier, epochs=epochs, seed=seed)
                for role in ROLES:
                    r = get_classifier(data, clf_cfg, role, cache_dir=cache, log=lambda m: None).report
                    g = r["groups"]
                    print(f"{role:<11} {epochs:>6} {seed:>4} {r['overall']:>8.4f} {g['many']:>6.3f} "
                          f"{g['medium']:>7.3f} {g['few']:>6.3f} {r['seconds']:>8.1f}")


if __name__ == "__main__":
    main()
