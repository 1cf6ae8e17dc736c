"""The metric record and the registry that holds one per metric group (the only list of metric names).

A record says everything the rest of the project needs to know about a metric group without running it: the
scalar keys it reports and the direction of each (lower or higher is better), which class labels it reads, what it
needs besides the generator (the annotator, LPIPS weights, k-NN radii), its own checks of the evaluation config and
the function that computes it. Config validation, the evaluator, the assets, the sweep's ``mode`` check and the
table in docs/metrics.md all read the registry (``imbgan_core.metrics.catalog.METRICS``); registration refuses a
duplicate name, a key another group reports, an unknown direction, label kind or need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

MIN, MAX = "min", "max"  # lower is better (distances, divergences) / higher is better (accuracies, coverage)

# Which class labels a group reads. NONE: no label at all. CLASS: it groups images by class, using the label G was
# asked for when G is class-conditional and the annotator's argmax when it is not (docs/metrics.md, "Unconditional
# generators"). CONDITIONING: it compares an image with the label G was asked for, so it needs a conditional G.
NONE, CLASS, CONDITIONING = "none", "class", "conditioning"
LABEL_KINDS = (NONE, CLASS, CONDITIONING)

ANNOTATOR, LPIPS_WEIGHTS, PRDC_RADII = "annotator", "lpips_weights", "prdc_radii"
NEEDS = (ANNOTATOR, LPIPS_WEIGHTS, PRDC_RADII)


@dataclass(frozen=True)
class EvalSizes:
    """Set sizes a metric's own check may refuse (known once the data is loaded)."""

    num_classes: int
    smallest_real_class: int
    real_total: int


@dataclass(frozen=True)
class Metric:
    """One metric group: ``compute(evaluator, generated, generate) -> (scalars, per_class, meta)`` reports exactly
    ``keys``; ``check(eval_cfg, sizes)`` lists its own config problems (dotted keys)."""

    name: str
    keys: dict[str, str]
    labels: str
    needs: frozenset[str]
    summary: str
    compute: Callable
    check: Callable[..., list[str]] | None = None
    per_class: tuple[str, ...] = ()  # per-class vectors it reports beside its scalars

    def problems(self, cfg, sizes: EvalSizes) -> list[str]:
        return list(self.check(cfg, sizes)) if self.check else []


class MetricRegistry:
    """Metric records by name, in registration order (the order of docs/metrics.md's table)."""

    def __init__(self):
        self._records: dict[str, Metric] = {}
        self._key_owner: dict[str, str] = {}

    def register(self, name: str, keys: dict[str, str], *, labels: str, summary: str, needs=(), check=None,
                 per_class=()) -> Callable:
        """Decorator: register the decorated ``compute`` function as metric group ``name``."""
        def add(compute: Callable) -> Callable:
            self.add(Metric(name, dict(keys), labels, frozenset(needs), summary, compute, check, tuple(per_class)))
            return compute
        return add

    def add(self, record: Metric) -> None:
        problems = []
        if record.name in self._records:
            problems.append(f"metric {record.name!r} is registered twice")
        for key, direction in record.keys.items():
            if key in self._key_owner:
                problems.append(f"metric {record.name!r}: key {key!r} is already reported by {self._key_owner[key]!r}")
            if direction not in (MIN, MAX):
                problems.append(f"metric {record.name!r}: key {key!r} has direction {direction!r} (min or max)")
        if record.labels not in LABEL_KINDS:
            problems.append(f"metric {record.name!r}: labels {record.labels!r} is not one of {list(LABEL_KINDS)}")
        unknown = sorted(record.needs - set(NEEDS))
        if unknown:
            problems.append(f"metric {record.name!r}: unknown needs {unknown} (known: {list(NEEDS)})")
        if not record.keys:
            problems.append(f"metric {record.name!r} reports no scalar key")
        if problems:
            raise ValueError("; ".join(problems))
        self._records[record.name] = record
        self._key_owner.update({key: record.name for key in record.keys})

    # -- lookups --------------------------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> Metric:
        return self._records[name]

    def __contains__(self, name) -> bool:
        return isinstance(name, str) and name in self._records

    def __iter__(self):
        return iter(self._records.values())

    def names(self) -> list[str]:
        return list(self._records)

    def keys_of(self, groups) -> set[str]:
        """Scalar keys reported when the evaluator computes ``groups`` (unknown names contribute nothing)."""
        return {key for g in groups if g in self for key in self[g].keys}

    def all_keys(self) -> dict[str, str]:
        """Every scalar key with its direction."""
        return {key: direction for record in self for key, direction in record.keys.items()}

    def direction(self, key) -> str | None:
        """MIN or MAX for a scalar key; None for a key no group reports."""
        owner = self._key_owner.get(key) if isinstance(key, str) else None
        return self[owner].keys[key] if owner else None

    def need(self, groups, what: str) -> bool:
        """Whether any of ``groups`` needs ``what`` (one of NEEDS)."""
        return any(what in self[g].needs for g in groups if g in self)

    def label_kinds(self, groups) -> dict[str, str]:
        return {g: self[g].labels for g in groups if g in self}

    # -- checks ---------------------------------------------------------------------------------------------------
    def config_problems(self, groups, g_conditional: bool = True) -> list[str]:
        """Problems found from the config alone: unknown names (``eval.metrics[i]`` named) and
        ``label_problems``."""
        problems = [f"eval.metrics[{i}]: unknown metric {name!r} (valid: {', '.join(self.names())})"
                    for i, name in enumerate(groups) if name not in self]
        return problems + self.label_problems(groups, g_conditional)

    def label_problems(self, groups, g_conditional: bool) -> list[str]:
        """Groups that compare images with the label G was asked for, which an unconditional G ignores."""
        if g_conditional:
            return []
        usable = ", ".join(r.name for r in self if r.labels != CONDITIONING)
        return [f"eval.metrics[{i}]: {name!r} compares each image with the class G was asked for, which an "
                f"unconditional generator (model.g_conditional: false) ignores; usable: {usable} (per-class ones "
                f"then group images by the annotator's label)"
                for i, name in enumerate(groups) if name in self and self[name].labels == CONDITIONING]

    def evaluation_problems(self, cfg, sizes: EvalSizes) -> list[str]:
        """Every requested group's own checks against the data's set sizes."""
        return [p for name in dict.fromkeys(cfg.metrics) if name in self for p in self[name].problems(cfg, sizes)]

    # -- docs -----------------------------------------------------------------------------------------------------
    def markdown_table(self) -> str:
        """The metric table of docs/metrics.md (a test keeps the two equal)."""
        rows = ["| group | scalar keys (direction) | class labels | needs | what |", "| --- | --- | --- | --- | --- |"]
        for r in self:
            keys = ", ".join(f"`{k}` ({'↓' if d == MIN else '↑'})" for k, d in r.keys.items())
            needs = ", ".join(sorted(r.needs)) or "–"
            rows.append(f"| `{r.name}` | {keys} | {r.labels} | {needs} | {r.summary} |")
        return "\n".join(rows)
