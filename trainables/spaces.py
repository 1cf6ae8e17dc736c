"""Load and validate a search-space YAML into a base run config, an Optuna define-by-run space and sweep settings.

File shape (docs/sweeps.md): ``name``, ``run`` (a full imbgan_core run config), ``space`` (dotted keys ->
distribution | fixed value, optional ``when`` conditions), ``search`` (metric, mode, num_samples, scheduler,
searcher) and ``resources``. Every problem is collected and raised at once as ``SpaceError`` before Ray starts:
unknown keys, dotted keys that are not in the run config, ranges outside a method's declared valid range
(each method class's ``param_specs``), a metric the evaluator does not produce, and configs at the corners of the
space that ``RunConfig.from_dict`` or the training loop's own pre-checks (``run_config_problems``) reject.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from imbgan_core.config import (SEED_MAX, ConfigError, Param, RunConfig, apply_overrides, field_spec, flatten,
                                load_yaml, method_params, read_fields, valid_keys)
from imbgan_core.metrics.catalog import METRICS
from trainables.budget import Budget, parse_duration
from imbgan_core.training import run_config_problems

TOP_LEVEL_KEYS = ("name", "run", "space", "search", "resources")
DISTRIBUTIONS = {"uniform": 2, "loguniform": 2, "quniform": 3, "randint": 2, "choice": None}
# Searching these would change the data, the classifier or the feature space per trial: assets are prepared once
# per sweep on the driver (trainables.assets) and metrics of different feature spaces are not comparable.
FROZEN_PREFIXES = ("dataset.", "classifier.", "eval.")
SCHEDULERS = ("asha", "fifo")
SAMPLERS = ("tpe", "random")
SECTIONS = ("run", "space", "search", "resources")  # top-level keys whose value is a mapping
# ``name`` becomes a folder (results/<name>, <storage>/<name>), an MLflow experiment and an Optuna study name:
# letters, digits, ".", "_", "-", starting with a letter or digit (so never "." or ".."), short enough for any
# filesystem once a "-N" suffix and Ray's own names are added.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
MAX_NAME_CHARS = 100


class SpaceError(ConfigError):
    """Every problem found in a space file, each naming the key and the value."""

    def __init__(self, path: str, problems: list[str]):
        self.path = path
        ConfigError.__init__(self, problems)
        self.args = (f"invalid search space {path}:\n  " + "\n  ".join(self.problems),)


@dataclass(frozen=True)
class Dist:
    """One entry of ``space``: a distribution (or fixed value) over a dotted run-config key, maybe conditional."""

    key: str
    kind: str  # uniform | loguniform | quniform | randint | choice | fixed
    args: tuple
    when: tuple = ()  # ((dotted key, (allowed values...)), ...): sample only when every condition holds

    def suggest(self, trial) -> Any:
        """Ask an Optuna trial (or a corner probe) for a value; randint's bounds are inclusive (Optuna)."""
        if self.kind == "fixed":
            return self.args[0]
        if self.kind == "choice":
            labels = [_choice_label(v) for v in self.args]
            return self.args[labels.index(trial.suggest_categorical(self.key, labels))]
        lo, hi = self.args[0], self.args[1]
        if self.kind == "randint":
            return trial.suggest_int(self.key, int(lo), int(hi))
        if self.kind == "quniform":
            return trial.suggest_float(self.key, lo, hi, step=self.args[2])
        return trial.suggest_float(self.key, lo, hi, log=self.kind == "loguniform")

    def describe(self) -> str:
        body = repr(self.args[0]) if self.kind == "fixed" else f"{self.kind}{list(self.args)}"
        cond = " when " + ", ".join(f"{k} in {list(v)}" for k, v in self.when) if self.when else ""
        return f"{self.key}: {body}{cond}"


@dataclass(frozen=True)
class Search:
    metric: str
    mode: str
    num_samples: int
    scheduler: str
    grace_period: int | None
    reduction_factor: float | None
    sampler: str
    seed: int
    n_startup_trials: int  # TPE's random start-up (OPTUNA_FIELDS); spaces with few trials set it lower
    budget: Budget = Budget()  # steps over all trials / wall time; num_samples None: trials until it is spent

    @property
    def ray_num_samples(self) -> int:
        """Ray's ``num_samples``: -1 (no limit: the budget ends the sweep) when num_samples is None."""
        return -1 if self.num_samples is None else self.num_samples


@dataclass(frozen=True)
class Resources:
    cpus_per_trial: float
    gpus_per_trial: float | str  # a number or "auto"
    max_concurrent: int | None


@dataclass
class Space:
    """A validated space: ``suggest`` is the Optuna define-by-run function, ``run_config`` builds a trial config."""

    name: str
    path: str
    run: dict
    params: list[Dist]
    search: Search
    resources: Resources
    base_flat: dict = field(init=False, repr=False)

    def __post_init__(self):
        self.base_flat = flatten(self.run)

    @property
    def max_steps(self) -> int:
        return int(self.run["train"]["steps"])

    @property
    def max_budget(self) -> int:
        """The most steps a trial can report (ASHA's max_t): an ensemble trains size x train.steps in one trial."""
        return largest_budget(self.run, self.params)

    @property
    def method_names(self) -> list[str]:
        """Every method a trial of this space can run (more than one when ``method.name`` is searched)."""
        for dist in self.params:
            if dist.key == "method.name":
                return [str(v) for v in (dist.args if dist.kind == "choice" else dist.args[:1])]
        return [self.run["method"]["name"]]

    def suggest(self, trial) -> dict[str, Any]:
        """Define-by-run: one trial's overrides (dotted key -> value); conditional keys only when their ``when`` holds."""
        chosen: dict[str, Any] = {}
        for dist in self.params:
            if all(self._current(k, chosen) in allowed for k, allowed in dist.when):
                chosen[dist.key] = dist.suggest(trial)
        return chosen

    def run_config(self, overrides: dict[str, Any]) -> RunConfig:
        """The full run config of a trial."""
        return build_run_config(self.run, overrides)

    def _current(self, key: str, chosen: dict) -> Any:
        return chosen[key] if key in chosen else self.base_flat.get(key)

    def describe(self) -> str:
        """The resolved space and the trial plan, for ``--dry-run``."""
        s, r = self.search, self.resources
        lines = [f"sweep {self.name!r} from {self.path}", "searched:"]
        lines += [f"  {d.describe()}" for d in self.params] or ["  (nothing: every trial runs the base config)"]
        lines.append(f"metric: {s.metric} ({s.mode}); searcher: optuna {s.sampler} (seed {s.seed})")
        if s.sampler == "tpe":
            lines.append(f"  TPE samples the first {s.n_startup_trials} trials at random"
                         + ("; with num_samples <= that, the whole sweep is random search (lower "
                            "search.searcher.optuna.n_startup_trials)" if s.n_startup_trials >= (s.num_samples or math.inf) else ""))
        if s.scheduler == "asha":
            rungs = asha_rungs(s.grace_period, s.reduction_factor, self.max_budget)
            lines.append(f"scheduler: ASHA on steps, rungs at {rungs}, reduction factor {s.reduction_factor}")
        else:
            lines.append("scheduler: FIFO (every trial runs the full budget)")
        train = self.run["train"]
        if s.num_samples is not None:
            lines.append(f"trials: {s.num_samples} x up to {self.max_budget} steps, evaluation every "
                         f"{train['eval_every']} steps (at most {s.num_samples * self.max_budget} steps in all)")
        else:
            lines.append(f"trials: as many as the budget allows, each up to {self.max_budget} steps, evaluation "
                         f"every {train['eval_every']} steps")
        if s.budget:
            limits = [f"{s.budget.steps} training steps over all trials" if s.budget.steps is not None else "",
                      f"{s.budget.seconds:g} s of wall time" if s.budget.seconds is not None else ""]
            lines.append(f"budget: {' and '.join(x for x in limits if x)}; when spent, no new trial starts and "
                         f"trials in flight stop at their next evaluation (stopped_by_budget)")
        lines.append(f"resources per trial: {r.cpus_per_trial} CPU, {r.gpus_per_trial} GPU; "
                     f"max concurrent: {r.max_concurrent or 'as resources allow'}")
        lines.append(f"method(s): {', '.join(self.method_names)}; dataset: {self.run['dataset']['source']} "
                     f"{self.run['dataset']['resolution']}px")
        return "\n".join(lines)


def build_run_config(run: dict, overrides: dict[str, Any]) -> RunConfig:
    """Base run dict + dotted overrides -> validated RunConfig; switching ``method.name`` drops the base method's
    own parameters (they belong to the other method)."""
    new_method = overrides.get("method.name", run["method"]["name"])
    if new_method != run["method"]["name"]:
        run = {**run, "method": {"name": new_method}}
    return RunConfig.from_dict(apply_overrides(run, overrides))


# A trial's config (what Ray passes to a trainable): the searched overrides as dotted keys, plus the constant
# param_space entries below: the base run dict and the sweep's metric/mode (trainables report divergence with them).
RUN_KEY, SWEEP_KEY = "run", "sweep"


def param_space(space: Space) -> dict:
    """Tune's constant param_space; the searcher adds the sampled dotted keys to it for every trial."""
    return {RUN_KEY: space.run, SWEEP_KEY: {"metric": space.search.metric, "mode": space.search.mode}}


def trained_suggestion(space: Space, suggestion: dict[str, Any]) -> dict[str, Any]:
    """A searcher's dotted suggestion plus the run dict it trains: Ray merges this into ``param_space``, so
    ``result.config["run"]`` reads back the trial's own values (``method.alpha`` 0.2188), not the space's base
    value (issue #16). The dotted keys stay: they are the searched columns of Ray's table and Optuna's params."""
    return {**suggestion, RUN_KEY: apply_overrides(space.run, suggestion)}


def searched(trial_config: dict) -> dict[str, Any]:
    """The sampled dotted-key overrides of a trial config."""
    return {k: v for k, v in trial_config.items() if k not in (RUN_KEY, SWEEP_KEY)}


def trial_run_config(trial_config: dict) -> RunConfig:
    """The full RunConfig a trial trains (used by every trainable, the MLflow callback and the summary)."""
    return build_run_config(trial_config[RUN_KEY], searched(trial_config))


def asha_rungs(grace: int, factor: float, max_t: int) -> list[int]:
    """ASHA's milestones: grace * factor^k below max_t (Li et al. 2020, as in Ray's AsyncHyperBandScheduler)."""
    rungs, t = [], float(grace)
    while t < max_t:
        rungs.append(int(t))
        t *= factor
    return rungs


def load_space(path: str, overrides: dict[str, Any] | None = None) -> Space:
    """Read, apply CLI overrides (dotted keys into the space document), validate; raise SpaceError with all problems.

    A check that needs a valid run config (a searched key's range, the metric ``run.eval.metrics`` produces, ASHA's
    grace period against ``run.train.steps``) runs only when ``run`` is valid: with an invalid ``run`` the message
    lists the real problems, never consequences of a stand-in default config."""
    try:
        doc = load_yaml(path)
    except ConfigError as exc:
        raise SpaceError(path, exc.problems) from None
    problems = override_conflicts(doc, overrides or {})
    if problems:
        raise SpaceError(path, problems)
    doc = apply_overrides(doc, overrides or {})
    for key in doc:
        if key not in TOP_LEVEL_KEYS:
            problems.append(f"{key}: unknown top-level key (valid: {', '.join(TOP_LEVEL_KEYS)})")
    name = doc.get("name", "")
    problems.extend(name_problems(name))
    sections = {key: _section(doc, key, problems) for key in SECTIONS}
    run_dict, method = _validate_run(doc.get("run"), problems)
    params = _parse_params(sections["space"] or {}, run_dict, problems, method)
    search = _parse_search(sections["search"] or {}, run_dict, problems, params)
    resources = _parse_resources(sections["resources"] or {}, problems)
    if problems:
        raise SpaceError(path, problems)
    space = Space(name=name, path=str(path), run=run_dict, params=params, search=search, resources=resources)
    problems.extend(_corner_problems(space))
    if problems:
        raise SpaceError(path, problems)
    return space


def name_problems(name: Any) -> list[str]:
    """Problems with a sweep name (see NAME_PATTERN): it names a folder, an MLflow experiment, an Optuna study."""
    if isinstance(name, str) and len(name) <= MAX_NAME_CHARS and NAME_PATTERN.fullmatch(name):
        return []
    if isinstance(name, str) and len(name) > MAX_NAME_CHARS:
        return [f"name: {len(name)} characters, at most {MAX_NAME_CHARS} (it names the sweep's folder), "
                f"got {name[:40]!r}..."]
    return [f"name: expected a folder-safe name (letters, digits, '.', '_', '-', starting with a letter or digit; "
            f"no '/', spaces, newlines, '.' or '..'), got {name!r}"]


def override_conflicts(doc: dict, overrides: dict[str, Any]) -> list[str]:
    """An override that would go inside a value that is not a mapping (``--num-samples 3`` with ``search: [1]``)
    would silently replace that value: report the value instead. A string stays replaceable: it is the short form
    of a one-key mapping (``scheduler: asha`` = ``{asha: {}}``)."""
    problems = []
    for dotted in overrides:
        node, parts = doc, dotted.split(".")
        for i, part in enumerate(parts[:-1]):
            value = node.get(part) if isinstance(node, dict) else None
            if value is None or isinstance(value, str):
                break
            if not isinstance(value, dict):
                where = ".".join(parts[:i + 1])
                problems.append(f"{where}: expected a mapping, got {value!r} (the override {dotted} goes inside it)")
                break
            node = value
    return problems


def _section(doc: dict, key: str, problems: list[str]) -> dict | None:
    """A top-level mapping (None when absent or empty); any other value is a problem naming the key (and then
    ``{}``: the section's own checks are skipped, the other sections are still checked)."""
    value = doc.get(key)
    if value is None or isinstance(value, dict):
        return value
    what = "a run-config mapping" if key == "run" else "a mapping"
    problems.append(f"{key}: expected {what}, got {type(value).__name__} {value!r}")
    return {}


# ---------------------------------------------------------------------------------------------------------------
def _validate_run(run: Any, problems: list[str]) -> tuple[dict | None, str | None]:
    """The validated run dict, or None when ``run`` is invalid; with it the method name when that is valid (the
    searched method parameters are still checked against it)."""
    if run is None:
        problems.append("run: missing (a run-config mapping: method, dataset, model, train, eval, ...)")
        return None, None
    if not isinstance(run, dict):
        return None, None  # _section reported it; nothing that depends on the run config is checked
    try:
        run_dict = RunConfig.from_dict(run).to_dict()
    except ConfigError as exc:
        problems.extend(f"run.{p}" for p in exc.problems)
        method = run.get("method")
        name = method.get("name", "cgan") if isinstance(method, dict) else None
        return None, name if isinstance(name, str) and name in method_params() else None
    return run_dict, run_dict["method"]["name"]


def _parse_params(raw: Any, run: dict | None, problems: list[str], method: str | None = None) -> list[Dist]:
    if not isinstance(raw, dict):
        problems.append(f"space: expected a mapping of dotted keys, got {raw!r}")
        return []
    known = valid_keys()
    dists: list[Dist] = []
    for key, spec in raw.items():
        where = f"space.{key}"
        if not isinstance(key, str) or key not in known:
            problems.append(f"{where}: not a key of the run config")
            continue
        if key.startswith(FROZEN_PREFIXES):
            problems.append(f"{where}: dataset/classifier/eval settings are shared by all trials of a sweep "
                            f"(prepared once); set them under run: or run one sweep per setting")
            continue
        dist = _parse_dist(key, spec, where, problems)
        if dist is None:
            continue
        dist = Dist(dist.key, dist.kind, dist.args, _parse_when(spec, where, known, problems))
        if run is not None:
            _check_against_config(dist, run, dists, where, problems)
        elif method is not None and key.startswith("method.") and key != "method.name":
            _check_against_config(dist, {"method": {"name": method}}, dists, where, problems)
        dists.append(dist)
    return dists


def _parse_dist(key: str, spec: Any, where: str, problems: list[str]) -> Dist | None:
    if not isinstance(spec, dict):
        return Dist(key, "fixed", (spec,))
    kinds = [k for k in spec if k != "when"]
    if len(kinds) != 1 or kinds[0] not in DISTRIBUTIONS:
        problems.append(f"{where}: expected one of {', '.join(DISTRIBUTIONS)} (plus optional when), got {list(spec)}")
        return None
    kind = kinds[0]
    args = spec[kind]
    if not isinstance(args, list) or not args:
        problems.append(f"{where}.{kind}: expected a non-empty list, got {args!r}")
        return None
    if kind == "choice":
        return Dist(key, kind, tuple(args))
    if len(args) != DISTRIBUTIONS[kind] or not all(_is_number(a) for a in args):
        problems.append(f"{where}.{kind}: expected {DISTRIBUTIONS[kind]} numbers, got {args!r}")
        return None
    lo, hi = args[0], args[1]
    if lo >= hi:
        problems.append(f"{where}.{kind}: low {lo!r} must be below high {hi!r}")
    elif kind == "loguniform" and lo <= 0:
        problems.append(f"{where}.loguniform: low {lo!r} must be > 0")
    elif kind == "randint" and not (float(lo).is_integer() and float(hi).is_integer()):
        problems.append(f"{where}.randint: bounds must be integers, got {args!r}")
    elif kind == "quniform" and (args[2] <= 0 or not _divides(args[2], hi - lo)):
        problems.append(f"{where}.quniform: step {args[2]!r} must be > 0 and divide high - low ({hi - lo!r})")
    else:
        return Dist(key, kind, tuple(args))
    return None


def _parse_when(spec: Any, where: str, known: set[str], problems: list[str]) -> tuple:
    """``when: {key: value | [values]}``; a condition reads the value sampled for an earlier space key, else the
    base run config's value."""
    cond = spec.get("when") if isinstance(spec, dict) else None
    if cond is None:
        return ()
    if not isinstance(cond, dict) or not cond:
        problems.append(f"{where}.when: expected a mapping of dotted key -> value or list of values, got {cond!r}")
        return ()
    out = []
    for key, allowed in cond.items():
        if not isinstance(key, str) or key not in known:
            problems.append(f"{where}.when.{key}: not a key of the run config")
        else:
            out.append((key, tuple(allowed) if isinstance(allowed, list) else (allowed,)))
    return tuple(out)


def _check_against_config(dist: Dist, run: dict, earlier: list[Dist], where: str, problems: list[str]) -> None:
    """Declared-range checks: method params against their method's ``param_specs``, other keys against their field."""
    values = _extremes(dist)
    if dist.key.startswith("method.") and dist.key != "method.name":
        param_name = dist.key.split(".", 1)[1]
        for method in _methods_for(dist, run, earlier):
            param: Param | None = method_params().get(method, {}).get(param_name)
            if param is None:
                valid = ", ".join(method_params().get(method, {})) or "none"
                problems.append(f"{where}: {param_name!r} is not a parameter of method {method!r} (valid: {valid}); "
                                f"use when: {{method.name: ...}} for per-method parameters")
                continue
            if dist.kind in ("uniform", "loguniform", "quniform", "randint"):
                problem = param.range_problem(float(values[0]), float(values[-1]))
                if problem is None and param.kind is int and not _integral(dist):
                    problem = "an integer parameter needs randint, choice or an integral quniform"
            else:
                problem = next((p for p in map(param.check, values) if p), None)
            if problem:
                problems.append(f"{where}: {problem} ({dist.describe()})")
        return
    spec = field_spec(dist.key)
    if spec is not None and spec[0] is int and not _integral(dist):
        problems.append(f"{where}: {dist.key} is an integer; use randint, choice or an integral quniform")
        return
    for value in values:
        overrides = {k: v[0] for k, v in dist.when}
        overrides[dist.key] = value
        try:
            build_run_config(run, overrides)
        except ConfigError as exc:
            problems.extend(f"{where}: {p}" for p in exc.problems if p.startswith(dist.key))


def _methods_for(dist: Dist, run: dict, earlier: list[Dist]) -> list[str]:
    for key, allowed in dist.when:
        if key == "method.name":
            return [str(a) for a in allowed]
    for d in earlier:
        if d.key == "method.name":
            return [str(a) for a in (d.args if d.kind == "choice" else d.args[:1])]
    return [run["method"]["name"]]


# The space file's own sections, declared like every other field (``config.Param``, read by ``config.read_fields``).
SEARCH_FIELDS = {
    "metric": Param("intra_fid", str, ref="a scalar key of a group in run.eval.metrics (docs/metrics.md)"),
    "mode": Param("min", str, choices=("min", "max"), ref="must match the metric's direction"),
    "num_samples": Param(8, int, 1, nullable=True, ref="trials to run; null: as many as the budget allows"),
    "budget": Param(None, object, ref="{steps: N, time: DURATION}: training steps over all trials, wall time"),
    "scheduler": Param("fifo", object, ref="fifo | asha | {asha: {grace_period, reduction_factor}}"),
    "searcher": Param("optuna", object, ref="optuna | {optuna: {sampler, seed, n_startup_trials}}"),
}
BUDGET_FIELDS = {
    "steps": Param(None, int, 1, nullable=True, ref="training steps summed over all trials (trainables.budget)"),
    "time": Param(None, object, nullable=True, ref="the sweep's wall time over all sessions: 90s, 20m, 1h30m"),
}
ASHA_FIELDS = {
    "grace_period": Param(None, int, 1, nullable=True, ref="first rung in steps; default run.train.eval_every"),
    "reduction_factor": Param(3.0, float, 1.0, None, low_open=True, ref="Li et al. 2020; Ray's default 3"),
}
OPTUNA_FIELDS = {
    "sampler": Param("tpe", str, choices=SAMPLERS, ref="Optuna TPESampler or RandomSampler"),
    "seed": Param(0, int, 0, SEED_MAX, ref="Optuna's samplers refuse seeds outside [0, 2**32 - 1]"),
    "n_startup_trials": Param(10, int, 1, ref="TPE's random start-up (Optuna's default 10)"),
}
RESOURCES_FIELDS = {
    "cpus_per_trial": Param(1.0, float, 0.0, None, low_open=True, ref="Ray CPUs per trial"),
    "gpus_per_trial": Param("auto", float, 0.0, 1.0, special=("auto",),
                            ref="'auto' or a share of one GPU (a trial trains on one device)"),
    "max_concurrent": Param(None, int, 1, nullable=True, ref="trials at once; default: as resources allow"),
}


def _parse_search(raw: dict, run: dict | None, problems: list[str], params: list[Dist] = ()) -> Search:
    values = read_fields(raw, SEARCH_FIELDS, "search", problems)
    metric, mode = values["metric"], values["mode"]
    direction = METRICS.direction(metric)
    if direction is None:
        problems.append(f"search.metric: {metric!r} is not a metric (valid: {', '.join(METRICS.all_keys())})")
    elif run is not None and metric not in METRICS.keys_of(run["eval"]["metrics"]):
        problems.append(f"search.metric: {metric!r} is not produced by run.eval.metrics {run['eval']['metrics']} "
                        f"(produced: {', '.join(sorted(METRICS.keys_of(run['eval']['metrics'])))})")
    if direction is not None and mode in ("min", "max") and mode != direction:
        better = "lower" if direction == "min" else "higher"
        problems.append(f"search.mode: {mode!r} contradicts search.metric {metric!r}, for which {better} is better "
                        f"(mode {direction!r}); a {mode} search would look for the worst trials")
    scheduler, grace, factor = _parse_scheduler(values["scheduler"], run, problems, params)
    sampler, seed, startup = _parse_searcher(values["searcher"], problems)
    budget = _parse_budget(values["budget"], problems)
    if values["num_samples"] is None and not budget:
        problems.append("search.num_samples: null (as many trials as the budget allows) needs search.budget.steps "
                        "or search.budget.time (--budget-steps, --time-budget)")
    return Search(metric, mode, values["num_samples"], scheduler, grace, factor, sampler, seed, startup, budget)


def _parse_budget(raw: Any, problems: list[str]) -> Budget:
    """``search.budget``: ``steps`` (training steps summed over trials) and ``time`` (``20m``, ``1h30m``, seconds)."""
    values = read_fields(raw, BUDGET_FIELDS, "search.budget", problems)
    seconds = None
    if values["time"] is not None:
        try:
            seconds = parse_duration(values["time"])
        except ValueError as exc:
            problems.append(f"search.budget.time: {exc}")
    return Budget(values["steps"], seconds)


def _parse_scheduler(raw: Any, run: dict | None, problems: list[str], params: list[Dist] = ()):
    name, opts = _single_key(raw, "search.scheduler", SCHEDULERS, problems)
    if name != "asha":
        return name or "fifo", None, None
    options = read_fields(opts, ASHA_FIELDS, "search.scheduler.asha", problems)
    grace, factor = options["grace_period"], options["reduction_factor"]
    if run is None:  # already reported: the grace period's default and upper bound are unknown
        return "asha", grace or 1, factor
    steps = run["train"]["steps"]
    grace = run["train"]["eval_every"] if grace is None else grace
    budget = largest_budget(run, params)  # an ensemble's trial reports size x train.steps: its rungs can sit past
    # member 0, which is the same in every trial of a space that searches only later members' settings (issue #16)
    if grace > budget:
        limit = f"run.train.steps={steps}" if budget == steps else f"the largest ensemble's budget {budget}"
        problems.append(f"search.scheduler.asha.grace_period: {grace!r} is above {limit} (with "
                        f"--max-steps below it, lower it too: --grace-period N)")
    return "asha", grace, factor


def largest_budget(run: dict, params) -> int:
    """train.steps x the largest ensemble size the space can sample (an ensemble trains its members in sequence);
    sizes that are not integers are left to the distribution checks."""
    sizes = [run["ensemble"]["size"], *(v for d in params if d.key == "ensemble.size" for v in _extremes(d)
                                        if isinstance(v, int) and not isinstance(v, bool))]
    return int(run["train"]["steps"]) * int(max(sizes))


def _parse_searcher(raw: Any, problems: list[str]):
    name, opts = _single_key(raw, "search.searcher", ("optuna",), problems)
    options = read_fields(opts, OPTUNA_FIELDS, "search.searcher.optuna", problems)
    if options["sampler"] == "random" and "n_startup_trials" in (opts or {}):
        problems.append("search.searcher.optuna.n_startup_trials: only the tpe sampler has a start-up phase "
                        "(sampler is 'random')")
    return options["sampler"], options["seed"], options["n_startup_trials"]


def _parse_resources(raw: dict, problems: list[str]) -> Resources:
    values = read_fields(raw, RESOURCES_FIELDS, "resources", problems)
    return Resources(values["cpus_per_trial"], values["gpus_per_trial"], values["max_concurrent"])


def _corner_problems(space: Space) -> list[str]:
    """Build the configs at the corners of the space (all low, all high, each choice option) and validate them."""
    n_options = max([len(d.args) for d in space.params if d.kind == "choice"] + [1])
    problems: list[str] = []
    for end in ("low", "high"):
        for index in range(n_options):
            overrides = space.suggest(_CornerProbe(end, index))
            try:
                cfg = space.run_config(overrides)
            except ConfigError as exc:
                problems.extend(f"space corner {overrides}: {p}" for p in exc.problems)
                continue
            problems.extend(f"space corner {overrides}: {p}" for p in run_config_problems(cfg))
    return list(dict.fromkeys(problems))


class _CornerProbe:
    """Stands in for an Optuna trial: answers every suggestion with the low or high end, or the index-th choice."""

    def __init__(self, end: str, index: int):
        self.end, self.index = end, index

    def suggest_float(self, name, low, high, *, step=None, log=False):
        if self.end == "low":
            return low
        return low + math.floor((high - low) / step + 1e-9) * step if step else high

    def suggest_int(self, name, low, high):
        return low if self.end == "low" else high

    def suggest_categorical(self, name, choices):
        return choices[self.index % len(choices)]


def _extremes(dist: Dist) -> list:
    if dist.kind in ("fixed", "choice"):
        return list(dist.args)
    return [dist.args[0], dist.args[1]]


def _integral(dist: Dist) -> bool:
    if dist.kind == "randint":
        return True
    if dist.kind == "quniform":
        return all(float(a).is_integer() for a in dist.args)
    return dist.kind in ("choice", "fixed")


def _single_key(raw: Any, where: str, valid: tuple, problems: list[str]) -> tuple[str | None, dict]:
    """``name`` or ``{name: {options}}`` -> (name, options)."""
    if isinstance(raw, str):
        raw = {raw: {}}
    if not isinstance(raw, dict) or len(raw) != 1:
        problems.append(f"{where}: expected one of {list(valid)} (optionally with options), got {raw!r}")
        return None, {}
    name, opts = next(iter(raw.items()))
    if name not in valid:
        problems.append(f"{where}: {name!r} is not one of {list(valid)}")
        return None, {}
    if opts is None:
        opts = {}
    if not isinstance(opts, dict):
        problems.append(f"{where}.{name}: expected a mapping of options, got {opts!r}")
        return None, {}
    return name, opts


def _choice_label(value: Any) -> Any:
    """Optuna categoricals hold scalars only: lists (e.g. generator weights) travel as their JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)



def _divides(step: float, span: float) -> bool:
    ratio = span / step
    return abs(ratio - round(ratio)) < 1e-9
