"""Quality of every method after the demo budget on digits-LT (rho = 10, 16x16): annotator class accuracy
(share of samples the balanced annotator labels with their conditioning class) and intra-FID in its feature space.

    python bench/method_quality.py [--steps 1500] [--width 0.25] [--methods cgan,cbgan] [--set key=value ...]

Target (issue #3): cgan >= 0.80 class accuracy. One torch thread; classifier and annotator come from the cache.
"""
from __future__ import annotations

import argparse
import time

import torch

from imbgan_core.assets import prepare_assets
from imbgan_core.config import RunConfig, apply_overrides, method_params, parse_set
from imbgan_core.training import Run

DEMO = {  # the demo budget; --set overrides any key
    "dataset": {"source": "digits", "resolution": 16, "imbalance": {"profile": "exponential", "ratio": 10}},
    "model": {"arch": "sndcgan", "width": 0.25},
    "train": {"steps": 1500, "eval_every": 1500, "device": "cpu"},
    "eval": {"metrics": ["intra_fid", "class_accuracy"], "samples_per_class": 100},
}
METHOD_EXTRAS = {"contentstyle": {"content_dim": 64, "style_dim": 64}}


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=",".join(method_params()))
    p.add_argument("--steps", type=int)
    p.add_argument("--width", type=float)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = parse_set(args.set)
    if args.steps:
        overrides.update({"train.steps": args.steps, "train.eval_every": args.steps})
    if args.width:
        overrides["model.width"] = args.width
    rows = []
    for name in args.methods.split(","):
        data = apply_overrides(DEMO, {"method": {"name": name, **METHOD_EXTRAS.get(name, {})}})
        cfg = RunConfig.from_dict(apply_overrides(data, overrides))
        run = Run(cfg, prepare_assets(cfg, log=lambda m: None))
        start = time.perf_counter()
        run.train(cfg.train.steps)
        seconds = time.perf_counter() - start
        result = run.evaluate()
        rows.append((name, result.scalars["class_accuracy"], result.scalars["intra_fid"], seconds))
        print(f"{name:<14} class_accuracy {rows[-1][1]:.3f}  intra_fid {rows[-1][2]:.2f}  train {seconds:.0f}s",
              flush=True)
    print(f"\n{cfg.train.steps} steps, width {cfg.model.width}, batch {cfg.train.batch_size}, "
          f"lr {cfg.train.lr_g}/{cfg.train.lr_d}, {args.threads} thread(s)")
    print(f"{'method':<14}{'class_acc':>10}{'intra_fid':>11}{'train_s':>9}")
    for name, acc, fid, seconds in rows:
        print(f"{name:<14}{acc:10.3f}{fid:11.2f}{seconds:9.0f}")


if __name__ == "__main__":
    main()
