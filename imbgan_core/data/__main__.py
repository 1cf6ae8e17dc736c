"""``python -m imbgan_core.data --source cifar10 --profile exponential --ratio 100 [--json]``

Prints class names, training / evaluation counts and the many / medium / few groups, as JSON or a table.
CIFAR counts need no files (the standard split sizes are known). Errors: a message on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys

from imbgan_core.config import ConfigError, DatasetConfig, ImbalanceConfig, RunConfig
from imbgan_core.data import describe

CIFAR_PLACEHOLDER_ROOT = "<not read: counts only>"  # satisfies the config's root check; describe() reads no files


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    defaults, imbalance = DatasetConfig(), ImbalanceConfig()
    p = argparse.ArgumentParser(prog="python -m imbgan_core.data", description=__doc__.split("\n\n")[1],
                                allow_abbrev=False)
    p.add_argument("--source", default=defaults.source, help=f"digits | cifar10 | cifar100 | imagefolder "
                                                             f"(default {defaults.source})")
    p.add_argument("--root", default=None, help="local folder (imagefolder: class subfolders; cifar: optional)")
    p.add_argument("--profile", default=imbalance.profile, help="exponential | step | lognormal | chi2 | pareto | none")
    p.add_argument("--ratio", type=float, default=imbalance.ratio, help="rho = n_max / n_min")
    p.add_argument("--minority-fraction", type=float, default=imbalance.minority_fraction, help="mu (step)")
    p.add_argument("--total", type=int, default=imbalance.total, help="total images (lognormal / chi2 / pareto)")
    p.add_argument("--seed", type=int, default=imbalance.seed, help="imbalance seed")
    p.add_argument("--resolution", type=int, default=defaults.resolution)
    p.add_argument("--channels", type=int, default=defaults.channels)
    p.add_argument("--eval-per-class", type=int, default=defaults.eval_per_class)
    p.add_argument("--groups-by", default="index", help="index | count")
    p.add_argument("--boundaries", type=int, nargs=2, default=None, metavar=("B1", "B2"),
                   help="index group boundaries (default: the dataset's UTLO boundaries, docs/reference.md#lt-groups)")
    p.add_argument("--thresholds", type=int, nargs=2, default=None, metavar=("MANY_GT", "FEW_LE"),
                   help="count group thresholds (default 100 40)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p.parse_args(argv)


def dataset_config(args: argparse.Namespace) -> DatasetConfig:
    """Validated through RunConfig, so errors name the dotted config key."""
    counts_only_cifar = args.source in ("cifar10", "cifar100") and not args.root
    groups = {"by": args.groups_by, "boundaries": args.boundaries}
    if args.thresholds is not None:
        groups["thresholds"] = args.thresholds
    dataset = {
        "source": args.source,
        "root": CIFAR_PLACEHOLDER_ROOT if counts_only_cifar else args.root,
        "resolution": args.resolution,
        "channels": args.channels,
        "eval_per_class": args.eval_per_class,
        "imbalance": {"profile": args.profile, "ratio": args.ratio, "minority_fraction": args.minority_fraction,
                      "total": args.total, "seed": args.seed},
        "groups": groups,
    }
    cfg = RunConfig.from_dict({"dataset": dataset}).dataset
    if counts_only_cifar:
        cfg.root = None
    return cfg


def format_table(info: dict) -> str:
    """One row per class: index, name, train count, eval count, group; then totals."""
    group_of = {k: name for name, members in info["groups"].items() for k in members}
    width = max(len("class"), *(len(n) for n in info["class_names"]))
    lines = [f"{info['source']} / profile {info['profile']}: {info['train_total']} training images, "
             f"{info['eval_total']} evaluation images, {len(info['class_names'])} classes",
             f"{'#':>4}  {'class':<{width}}  {'train':>7}  {'eval':>6}  group",
             f"{'-' * 4}  {'-' * width}  {'-' * 7}  {'-' * 6}  ------"]
    for k, name in enumerate(info["class_names"]):
        lines.append(f"{k:>4}  {name:<{width}}  {info['train_counts'][k]:>7}  {info['eval_counts'][k]:>6}  "
                     f"{group_of.get(k, '-')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        info = describe(dataset_config(args))
    except (ConfigError, ValueError, OSError) as exc:  # OSError: a root that is a file, unreadable, ...
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(info, indent=1) if args.json else format_table(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
