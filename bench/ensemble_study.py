"""Slim 2020's Table 3 question on digits-LT: do ensembles of sequentially reweighted GANs beat independent ones?

    python bench/ensemble_study.py [--steps 1200] [--cas-steps 300] [--threads 1] [--set key=value ...]

Trains ensembles of up to 3 members with ``reweighting: none`` (independent seeds, the paper's baseline) and
``B`` (sigmoid weights) on the run config of ``search_spaces/ensemble.yaml`` and scores every prefix (|G| = 1, 2, 3)
with the evaluator: intra-FID and class_accuracy (annotator feature space) and CAS against the real-data reference
classifier trained with the same budget (cas_real). Member 0 is the same run in both ensembles (same seed, uniform
sampling): it is trained once and |G| = 1 is one row. Prints a table and the wall time of every member.

Budget: 5 members x 1200 steps at the space's lr 1e-3: 255 s on an idle 2-core machine with --threads 2 (47 s
per member). With the papers' lr 2e-4 members need ~2500 steps before they follow their class labels (before that
CAS sits at chance); past ~1600 steps at lr 1e-3 intra-FID gets worse again (docs/sweeps.md).
"""
from __future__ import annotations

import argparse
import time

import torch

from imbgan_core.assets import prepare_assets
from imbgan_core.config import RunConfig, load_yaml, parse_set
from imbgan_core.ensemble.ensemble import Ensemble

SPACE = "search_spaces/ensemble.yaml"
COLUMNS = ("intra_fid", "class_accuracy", "cas", "cas_real")


def base_config(args) -> RunConfig:
    run = load_yaml(args.space)["run"]
    overrides = {"train.steps": args.steps, "train.eval_every": args.steps, "eval.cas.steps": args.cas_steps,
                 "ensemble.size": args.max_size, "train.device": "cpu", **parse_set(args.set)}
    return RunConfig.from_dict(run).replace(overrides)


def study(base: RunConfig, max_size: int) -> list[dict]:
    assets = prepare_assets(base, device="cpu", log=lambda m: None)
    rows = []
    first = None
    for method in ("none", "B"):
        ensemble = Ensemble(base.replace({"ensemble.reweighting": method}), assets, device="cpu")
        for size in range(1, max_size + 1):
            started = time.perf_counter()
            if size == 1 and first is not None:
                ensemble.members.append(first)  # member 0 is the same run in both: same seed, uniform sampling
                continue
            ensemble.train(base.train.steps)
            trained = time.perf_counter() - started
            first = first or ensemble.members[0]
            started = time.perf_counter()
            scalars = ensemble.evaluate().scalars
            rows.append({"reweighting": method if size > 1 else "-", "size": size, "train_s": trained,
                         "eval_s": time.perf_counter() - started, **{c: scalars.get(c, float("nan")) for c in COLUMNS}})
            print(format_row(rows[-1]), flush=True)
    return rows


def format_row(row: dict) -> str:
    return (f"{row['reweighting']:>11} {row['size']:>3} " + " ".join(f"{row[c]:>14.4f}" for c in COLUMNS)
            + f" {row['train_s']:>8.1f} {row['eval_s']:>7.1f}")


def main() -> None:
    p = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n\n")[0])
    p.add_argument("--space", default=SPACE, help="space file whose run: section is the base config")
    p.add_argument("--steps", type=int, default=1200, help="training steps per member")
    p.add_argument("--cas-steps", type=int, default=300, help="CAS classifier steps (eval.cas.steps)")
    p.add_argument("--max-size", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads (more than 1 thrashes a busy 2-core machine)")
    p.add_argument("--set", nargs="*", default=[], help="extra dotted overrides of the run config")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    base = base_config(args)
    print(f"digits-LT ensemble study: {args.steps} steps per member, method {base.method.name}, CAS "
          f"{base.eval.cas.steps} steps x {base.eval.cas.batch_size} (p_t {base.eval.cas.filter_threshold}), "
          f"{base.eval.samples_per_class} samples per class; metrics in the annotator's feature space")
    print(f"{'reweighting':>11} {'|G|':>3} " + " ".join(f"{c:>14}" for c in COLUMNS) + f" {'train_s':>8} {'eval_s':>7}")
    started = time.perf_counter()
    study(base, args.max_size)
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
