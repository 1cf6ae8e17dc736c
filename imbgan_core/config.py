"""Typed run configuration: the one source of every default.

A run config is a tree of dataclasses. ``RunConfig.from_dict`` rejects unknown keys and bad values with the
dotted key in the message (all problems at once, as ``ConfigError.problems``); ``to_dict`` round-trips.
Method hyperparameters are ``Param`` declarations (``param_specs``) owned by each method class
(``imbgan_core.methods``, read through ``method_params()``) with their valid ranges and the paper section they come
from, so search spaces can be validated against them before any work starts; metric names, keys and checks are the
metric registry's (``metric_registry()``).
"""
from __future__ import annotations

import copy
import importlib
import dataclasses
import math
import os
import re
import stat
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import yaml


class ConfigError(ValueError):
    """A config problem; ``problems`` lists every ``dotted.key: message`` found."""

    def __init__(self, problems: list[str]):
        self.problems = clip_problems(problems)
        super().__init__("invalid configuration:\n  " + "\n  ".join(self.problems))


# Error messages quote the values they reject: a value can be huge (a YAML alias bomb, a 10 MB string), so every
# problem line is clipped and the list is capped; the dotted key and the start of the value always survive.
MAX_PROBLEM_CHARS, MAX_PROBLEMS = 400, 30


def clip(text: str, limit: int = MAX_PROBLEM_CHARS) -> str:
    """``text`` on one line, at most ``limit`` characters (an ellipsis says how much was cut)."""
    text = str(text).replace("\n", "\\n").replace("\r", "\\r")
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def clip_problems(problems) -> list[str]:
    problems = [clip(p) for p in problems]
    if len(problems) > MAX_PROBLEMS:
        problems = problems[:MAX_PROBLEMS] + [f"... and {len(problems) - MAX_PROBLEMS} more problems"]
    return problems


# --------------------------------------------------------------------------------------------------------------
# Method hyperparameters: declared once, with ranges, used for config validation and search-space validation.
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One declared field: default, type, valid range or choices, and where it comes from (``ref``: the paper's
    section, a docs/reference.md anchor or a help text). The one way a field is declared and checked: run-config
    fields (``_f``), each method's ``param_specs`` and the space file's ``search`` / ``resources`` sections
    (``read_fields``)."""

    default: Any
    kind: type = float
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # True: low itself is not allowed
    high_open: bool = False
    choices: tuple | Callable[[], tuple] | None = None  # a callable reads a registry's names on use (``registry``)
    ref: str = ""
    nullable: bool = False  # None is a valid value (it means "unset": the code derives one)
    special: tuple = ()  # string values accepted besides the kind (gpus_per_trial: "auto")

    def check(self, value: Any) -> str | None:
        """Return a problem description, or None when ``value`` is valid."""
        if (value is None and self.nullable) or (isinstance(value, str) and value in self.special):
            return None
        if self.choices is not None or self.kind is object:  # object: any type (run-config fields, unions)
            return self.bounds_problem(value)
        if self.kind is bool:
            return None if isinstance(value, bool) else f"{value!r} is not a boolean"
        if self.kind is str:
            return None if isinstance(value, str) else f"{value!r} is not a string"
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if self.kind is int and not float(value).is_integer():
            return f"{value!r} is not an integer"
        if not math.isfinite(float(value)):
            return f"{value!r} is not finite"
        return self.range_problem(value, value)

    def bounds_problem(self, value: Any) -> str | None:
        """Choices and range only, for a value whose type is already checked (run-config fields)."""
        if self.choices is not None:
            options = self.options()
            return None if value in options else f"{value!r} is not one of {list(options)}"
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return self.range_problem(value, value)
        return None

    def options(self) -> tuple:
        """The valid choices; read from the registry that owns them when declared with ``registry``."""
        return tuple(self.choices()) if callable(self.choices) else tuple(self.choices or ())

    def range_problem(self, lo: float, hi: float) -> str | None:
        """Problem if the interval [lo, hi] leaves the valid range (used for search distributions too)."""
        if self.low is not None and (lo < self.low or (self.low_open and lo <= self.low)):
            return f"{lo!r} is below the valid range {self.describe_range()}"
        if self.high is not None and (hi > self.high or (self.high_open and hi >= self.high)):
            return f"{hi!r} is above the valid range {self.describe_range()}"
        return None

    def describe_range(self) -> str:
        left = "(" if self.low_open or self.low is None else "["
        right = ")" if self.high_open or self.high is None else "]"
        lo = "-inf" if self.low is None else repr(self.low)
        hi = "inf" if self.high is None else repr(self.high)
        return f"{left}{lo}, {hi}{right}"

    def coerce(self, value: Any) -> Any:
        if self.kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if self.kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        return value


def registry(module: str, names: str, extra: tuple = ()) -> Callable[[], tuple]:
    """Choices owned by a registry: ``extra`` (``auto``, ``none``) then the names of ``module.names``, read on use,
    so that a backbone, data source, profile, loss or feature space added to its registry is valid here with no
    second list (the registries import torch or scipy; this module does not)."""
    def options() -> tuple:
        return (*extra, *getattr(importlib.import_module(module), names))
    return options


def method_params() -> dict[str, dict[str, Param]]:
    """Every method's declared parameters by method name: each method class owns its ``param_specs``
    (``imbgan_core.methods``), registered with it; imported on use because the methods import this module."""
    from .methods import METHODS
    return {name: cls.param_specs for name, cls in METHODS.items()}


def metric_registry():
    """The metric registry (``imbgan_core.metrics.catalog.METRICS``): every metric name, its scalar keys and their
    directions, what it needs and its own checks. Imported on use: the catalog imports the metric code."""
    from .metrics.catalog import METRICS
    return METRICS


# --------------------------------------------------------------------------------------------------------------
# The config tree: every field is declared with ``_f`` (a ``Param`` in the field's metadata).
# --------------------------------------------------------------------------------------------------------------
# Every seed (run, classifier, imbalance, searcher) lies in [0, 2**32 - 1]: numpy's and Optuna's samplers refuse
# anything else, and they are first called long after the config was read (inside a Ray trial, or when the Optuna
# sampler is built after Ray started), so the range is checked here, with the key named. The run's own offsets
# (train.seed + a constant, + the ensemble member) go to torch generators, which take any 64-bit value.
SEED_MAX = 2 ** 32 - 1


def _f(default=dataclasses.MISSING, *, factory=None, choices=None, min=None, max=None, gt=None, help=""):
    """A run-config field declared as a ``Param`` (type from the annotation): ``min`` / ``max`` inclusive, ``gt``
    exclusive lower bound."""
    low = gt if gt is not None else min
    param = Param(None if factory else default, object, low, max, low_open=gt is not None,
                  choices=choices if callable(choices) else tuple(choices) if choices else None, ref=help)
    if factory is not None:
        return field(default_factory=factory, metadata={"param": param})
    return field(default=default, metadata={"param": param})


def read_fields(raw: Any, fields: dict[str, Param], where: str, problems: list[str],
                unknown: str = "unknown key") -> dict[str, Any]:
    """The values of a mapping of declared fields (defaults filled in); unknown keys (``unknown`` says what they
    are not) and bad values become problems naming ``where.key``. A value that is not a mapping is one problem, and
    every field takes its default."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        problems.append(f"{where}: expected a mapping of options, got {raw!r}")
        raw = {}
    values = {}
    for key, value in raw.items():
        if key not in fields:
            problems.append(f"{where}.{key}: {unknown} (valid: {', '.join(fields) or 'none'})")
            continue
        problem = fields[key].check(value)
        if problem:
            problems.append(f"{where}.{key}: {problem}")
            continue
        values[key] = fields[key].coerce(value)
    return {key: values.get(key, param.default) for key, param in fields.items()}


@dataclass
class ImbalanceConfig:
    """How the training split is made long-tailed (docs/reference.md#long-tailed-data)."""

    profile: str = _f("exponential", choices=registry("imbgan_core.data.longtail", "PROFILES"))
    ratio: float = _f(10.0, min=1.0, help="rho = n_max / n_min for exponential and step")
    minority_fraction: float = _f(0.5, min=0.0, max=1.0, help="mu: share of minority classes (step profile)")
    total: int | None = _f(None, gt=0, help="total training images for lognormal/chi2/pareto (default: keep n_max*K/4)")
    seed: int = _f(0, min=0, max=SEED_MAX,
                   help="seed for per-class sample choice and the class shuffle of the Softlabel-GAN profiles")


@dataclass
class GroupsConfig:
    """Many / medium / few class groups for tail metrics (UTLO index boundaries or gSR-GAN count thresholds)."""

    by: str = _f("index", choices=("index", "count"))
    boundaries: list[int] | None = _f(None, help="index boundaries [b1, b2]: many < b1 <= medium < b2 <= few; "
                                              "None = the dataset's UTLO default (docs/reference.md#lt-groups)")
    thresholds: list[int] = _f(factory=lambda: [100, 40], help="count thresholds [many_gt, few_le]")


@dataclass
class DatasetConfig:
    source: str = _f("digits", choices=registry("imbgan_core.data.sources", "LOADERS"))
    root: str | None = _f(None, help="local folder (cifar: torchvision layout; imagefolder: class subfolders)")
    download: bool = _f(False, help="cifar only: let torchvision download when the files are missing")
    resolution: int = _f(16, choices=(8, 16, 32, 64, 128))
    channels: int = _f(1, choices=(1, 3))
    eval_per_class: int = _f(30, min=1, help="held-out balanced evaluation images per class (digits, imagefolder)")
    imbalance: ImbalanceConfig = _f(factory=ImbalanceConfig)
    groups: GroupsConfig = _f(factory=GroupsConfig)


@dataclass
class ModelConfig:
    arch: str = _f("sndcgan", choices=registry("imbgan_core.nets", "ARCHITECTURES"))
    width: float = _f(1.0, gt=0.0, help="channel multiplier; 1.0 = the paper's widths")
    z_dim: int = _f(128, min=1)
    g_conditional: bool = _f(True, help="class-conditional BatchNorm in G (False: unconditional G)")
    d_conditional: bool = _f(True, help="projection head in D (False: unconditional D)")


@dataclass
class MethodConfig:
    """``name`` plus that method's hyperparameters (the method class's ``params``), flat in YAML:
    {name: cbgan, lambda: 7.5}."""

    name: str = "cgan"
    params: dict = field(default_factory=dict)

    def __getitem__(self, key: str):
        return self.params[key]


@dataclass
class TrainConfig:
    steps: int = _f(2000, min=1)
    batch_size: int = _f(64, min=2)
    lr_g: float = _f(2e-4, gt=0.0)
    lr_d: float = _f(2e-4, gt=0.0)
    beta1: float = _f(0.5, min=0.0, max=1.0)
    beta2: float = _f(0.999, min=0.0, max=1.0)
    n_dis: int = _f(1, min=1, help="discriminator steps per generator step")
    loss: str = _f("auto", choices=registry("imbgan_core.methods.losses", "LOSSES", ("auto",)),
                   help="auto = the method's paper loss (relativistic for cbgan, non-saturating for acgan, "
                        "hinge otherwise)")
    diffaugment: str = _f("color,translation,cutout", help="comma-separated DiffAugment policy; '' = off")
    ema_start: int = _f(0, min=0, help="step from which G's EMA is updated")
    ema_decay: float = _f(0.999, min=0.0, max=1.0)
    eval_every: int = _f(250, min=1)
    seed: int = _f(0, min=0, max=SEED_MAX)
    device: str = _f("auto", help="auto | cpu | cuda | cuda:N")
    threads: int = _f(0, min=0, help="torch CPU threads; 0 = torch's default (a sweep trial: its CPU share). The "
                                     "count changes float rounding, so best.yaml records the trial's own")
    amp: bool = _f(False, help="mixed precision on CUDA (ignored with a warning on CPU)")


@dataclass
class ClassifierConfig:
    """The pretrained classifier C (methods) and the balanced annotator (metrics) share these settings."""

    arch: str = _f("auto", choices=registry("imbgan_core.nets.classifier", "CLASSIFIER_ARCHS", ("auto",)),
                   help="auto: cnn below 32 px, resnet32 otherwise")
    epochs: int = _f(30, min=1)
    batch_size: int = _f(128, min=2)
    lr: float = _f(1e-3, gt=0.0)
    entropy_bonus: float = _f(0.0, min=0.0, help="Softlabel-GAN: CE - w * entropy, w = 0.3 in the paper")
    seed: int = _f(0, min=0, max=SEED_MAX)
    threads: int = _f(1, min=1, help="CPU threads C and the annotator train on (part of their cache key: the weights "
                                     "depend on it, the caller's thread count does not matter)")


@dataclass
class CASConfig:
    """Classification Accuracy Score: classifier trained on generated data, tested on the real eval split."""

    steps: int = _f(500, min=1)
    batch_size: int = _f(128, min=2)
    flips: bool = _f(True)
    crops: bool = _f(True)
    filter_threshold: float | None = _f(None, min=0.0, max=1.0, help="p_t: keep samples the filter gives >= p_t")
    truncation: float | None = _f(None, gt=0.0, help="psi: truncate latents to |z| <= psi (None = off)")


@dataclass
class EvalConfig:
    features: str = _f("annotator", choices=registry("imbgan_core.metrics.features", "FEATURE_SPACES"))
    weights_path: str | None = _f(None, help="inception: path to torch-fidelity's weights-inception-2015-12-05-"
                                             "6726825d.pth (default: $TORCH_HOME/hub/checkpoints); never downloaded")
    samples_per_class: int = _f(100, min=2)
    metrics: list[str] = _f(factory=lambda: ["fid", "intra_fid", "kid", "class_accuracy", "class_kl"])
    kid_subsets: int = _f(100, min=1)
    kid_subset_size: int = _f(1000, min=2)
    prdc_k: int = _f(5, min=1)
    min_class_samples: int = _f(10, min=2, help="an unconditional G's class with fewer annotator-labelled images "
                                                "is under-filled: per-class metrics use the whole generated pool for "
                                                "it (docs/metrics.md#unconditional-generators)")
    use_ema: bool = _f(True)
    cas: CASConfig = _f(factory=CASConfig)


@dataclass
class EnsembleConfig:
    """GAN ensemble with sample reweighting (Slim 2020): |G| members trained in sequence."""

    size: int = _f(1, min=1, max=10)
    reweighting: str = _f("none", choices=registry("imbgan_core.ensemble.reweighting", "TRANSFORMS", ("none",)))
    generator_weights: list[float] | None = _f(None, help="sampling weight per member (None = uniform)")
    samples_per_class: int = _f(100, min=1, help="generated images per class and previous member for Algorithm 1's "
                                                 "distances (Slim 2020 Sec. 5.2 used 50k = 5k per class)")
    reuse_members: bool = _f(True, help="a sweep trial loads a member that another trial already trained from the "
                                        "same inputs instead of retraining it (docs/sweeps.md#ensemble-members)")


@dataclass
class RunConfig:
    name: str = "run"
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)

    @classmethod
    def from_dict(cls, data: dict | None) -> "RunConfig":
        problems: list[str] = []
        cfg = _build(cls, data or {}, "", problems)
        if not problems:
            problems.extend(_cross_checks(cfg))
        if problems:
            raise ConfigError(problems)
        return cfg

    def to_dict(self) -> dict:
        return _to_dict(self)

    @classmethod
    def from_yaml(cls, path: str) -> "RunConfig":
        return cls.from_dict(load_yaml(path))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, overrides: dict[str, Any]) -> "RunConfig":
        """A new config with dotted-key overrides applied (validated)."""
        return RunConfig.from_dict(apply_overrides(self.to_dict(), overrides))


# --------------------------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------------------------
class YAMLLimitError(yaml.YAMLError):
    """A YAML document beyond what imbgan reads: too large, nested too deeply, or expanding (through aliases) to
    more nodes than any config has."""


# Bounds on what one YAML document may be. The largest config in the project has a few hundred nodes; a 1 KB
# "billion laughs" document (aliases of aliases) expands to 10^9: refused before it is constructed or printed.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_NODES = 100_000
MAX_YAML_DEPTH = 100


class SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that also reads ``1e-3`` as a float (YAML 1.2 style; PyYAML's 1.1 rules need ``1.0e-3``)
    and refuses a mapping with the same key twice (PyYAML keeps the last one silently), naming the key and both
    lines. ``<<`` merge keys keep their meaning (explicit keys override merged ones)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:  # an unhashable key: PyYAML's own construct_mapping reports it
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"found duplicate key {clip(repr(key), 80)} (first at line {first.line + 1})",
                        key_node.start_mark)
                seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep=deep)


SafeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _check_expansion(root) -> None:
    """Refuse a node graph that expands to more than MAX_YAML_NODES nodes or nests deeper than MAX_YAML_DEPTH
    (aliases count every time they are used: that is what printing or copying the value costs)."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, 0, False)]
    while stack:
        node, depth, done = stack.pop()
        key = id(node)
        children = ([n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode)
                    else list(node.value) if isinstance(node, yaml.SequenceNode) else [])
        if done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in children)
            if sizes[key] > MAX_YAML_NODES:
                raise YAMLLimitError(f"the document expands to more than {MAX_YAML_NODES} nodes (aliases of "
                                     f"aliases, line {node.start_mark.line + 1}); no imbgan config is that large")
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise YAMLLimitError(f"recursive alias at line {node.start_mark.line + 1} (a value that contains itself)")
        if depth > MAX_YAML_DEPTH:
            raise YAMLLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels at line {node.start_mark.line + 1}")
        on_path.add(key)
        stack.append((node, depth, True))
        stack.extend((c, depth + 1, False) for c in children if id(c) not in sizes)


def safe_load(text_or_stream, name: str | None = None) -> Any:
    """Parse with the safe loader above (what ``yaml.load(..., Loader=SafeLoader)`` does): no arbitrary objects,
    no duplicate keys, and a bounded size (``YAMLLimitError``). The one YAML parser of the project: every config,
    space, best.yaml and ``--set`` value goes through it (``load_yaml`` for files)."""
    loader = SafeLoader(text_or_stream)
    if name:
        loader.name = name  # marks in error messages name the file
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    except RecursionError:
        raise YAMLLimitError(f"nested deeper than {MAX_YAML_DEPTH} levels") from None
    finally:
        loader.dispose()


def read_text_file(path, what: str = "file", max_bytes: int = MAX_YAML_BYTES) -> str:
    """The UTF-8 text of a small regular file, or a ConfigError that names the path and says what is wrong (missing,
    a directory, not a regular file, unreadable, too large, not UTF-8)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except NotADirectoryError:
        raise ConfigError([f"{path}: file not found (a parent in the path is a file, not a folder)"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    if stat.S_ISDIR(st.st_mode):
        raise ConfigError([f"{path}: is a directory, expected a {what}"])
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError([f"{path}: not a regular file, expected a {what}"])
    try:
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    if len(raw) > max_bytes:
        raise ConfigError([f"{path}: larger than {max_bytes} bytes, expected a {what} (configs are a few KB)"])
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at line {line}, offset "
                           f"{exc.start}); save the {what} as UTF-8"]) from None


def yaml_error_text(exc: yaml.YAMLError) -> str:
    """`` at line L, column C: what (context)`` for PyYAML's marked errors, `` (message)`` for the others."""
    mark = getattr(exc, "problem_mark", None)
    if isinstance(exc, yaml.MarkedYAMLError) and mark is not None and exc.problem:
        context = f" ({exc.context})" if exc.context and "duplicate key" not in exc.problem else ""
        return f" at line {mark.line + 1}, column {mark.column + 1}: {exc.problem}{context}"
    return f" ({' '.join(str(exc).split())})"


def load_yaml(path: str) -> dict:
    """Read a YAML mapping safely (``safe_load``'s rules, ``read_text_file``'s checks); errors name the path."""
    text = read_text_file(path, "YAML file")
    try:
        data = safe_load(text, name=str(path))
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: not valid YAML{yaml_error_text(exc)}"]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: expected a mapping at the top level, got {type(data).__name__}"])
    return data


def parse_set(items: list[str]) -> dict[str, Any]:
    """Parse ``--set dotted.key=value`` items; values are YAML scalars (``1e-3``, ``true``, ``[1, 2]``)."""
    out: dict[str, Any] = {}
    problems = []
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            problems.append(f"--set {item!r}: expected dotted.key=value")
            continue
        if not raw.strip():
            out[key.strip()] = ""  # `key=` means the empty string (e.g. train.diffaugment= turns it off)
            continue
        try:
            value = safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out[key.strip()] = value
    if problems:
        raise ConfigError(problems)
    return out


def apply_overrides(data: dict, overrides: dict[str, Any]) -> dict:
    """Set dotted keys in a nested dict (copy). Intermediate mappings are created as needed."""
    data = copy.deepcopy(data)
    for dotted, value in overrides.items():
        node = data
        parts = dotted.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return data


def flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dict -> {dotted.key: value} (lists stay values). Used for MLflow params and space validation."""
    out: dict[str, Any] = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def valid_keys() -> set[str]:
    """Every dotted key a run config accepts, method parameters included as ``method.<param>``."""
    keys = set(flatten(RunConfig().to_dict()))
    keys.discard("method.name")
    keys.add("method.name")
    for params in method_params().values():
        keys.update(f"method.{p}" for p in params)
    return keys


def field_spec(dotted: str, method: str | None = None):
    """(type, metadata) for a dotted config key, or a ``Param`` for ``method.<param>``; None when unknown."""
    parts = dotted.split(".")
    if parts[0] == "method" and len(parts) == 2 and parts[1] != "name":
        return method_params().get(method or "", {}).get(parts[1])
    cls: Any = RunConfig
    for i, part in enumerate(parts):
        if not dataclasses.is_dataclass(cls):
            return None
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            return None
        fld = fields[part]
        tp = typing.get_type_hints(cls)[part]
        if i == len(parts) - 1:
            return tp, fld.metadata
        cls = tp
    return None


def _build(cls, data: Any, prefix: str, problems: list[str]):
    if not isinstance(data, dict):
        problems.append(f"{prefix.rstrip('.') or '<root>'}: expected a mapping, got {data!r}")
        return cls()
    if cls is MethodConfig:
        return _build_method(data, prefix, problems)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            problems.append(f"{dotted}: unknown key (valid: {', '.join(sorted(fields))})")
            continue
        kwargs[key] = _convert(hints[key], value, dotted, fields[key].metadata, problems)
    return cls(**kwargs)


def _build_method(data: dict, prefix: str, problems: list[str]) -> MethodConfig:
    name = data.get("name", "cgan")
    declared = method_params()
    if not isinstance(name, str) or name not in declared:
        problems.append(f"{prefix}name: unknown method {name!r} (valid: {', '.join(declared)})")
        return MethodConfig(name=str(name))
    given = {key: value for key, value in data.items() if key != "name"}
    params = read_fields(given, declared[name], prefix.rstrip("."), problems,
                         unknown=f"unknown parameter for method {name!r}")
    return MethodConfig(name=name, params=params)


def _convert(tp, value, dotted: str, meta, problems: list[str]):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        non_none = [a for a in args if a is not type(None)]
        if value is None:
            return None
        return _convert(non_none[0], value, dotted, meta, problems)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, dotted + ".", problems)
    if origin is list:
        if not isinstance(value, list):
            problems.append(f"{dotted}: expected a list, got {value!r}")
            return value
        return [_convert(args[0], v, f"{dotted}[{i}]", {}, problems) for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            problems.append(f"{dotted}: expected a mapping, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{dotted}: expected true/false, got {value!r}")
        return value
    if tp in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            problems.append(f"{dotted}: expected a number, got {value!r}")
            return value
        if tp is int and not float(value).is_integer():
            problems.append(f"{dotted}: expected an integer, got {value!r}")
            return value
        if not math.isfinite(float(value)):
            problems.append(f"{dotted}: expected a finite number, got {value!r}")
            return value
        value = tp(value)
    elif tp is str and not isinstance(value, str):
        problems.append(f"{dotted}: expected a string, got {value!r}")
        return value
    problem = meta["param"].bounds_problem(value) if meta and "param" in meta else None
    if problem:
        problems.append(f"{dotted}: {problem}")
    return value


def _cross_checks(cfg: RunConfig) -> list[str]:
    """Checks that involve more than one key."""
    problems = []
    ds = cfg.dataset
    root_problem = importlib.import_module("imbgan_core.data.sources").root_problem(ds)  # the source's own check
    if root_problem:
        problems.append(root_problem)
    if ds.source == "digits" and ds.resolution not in (8, 16, 32):
        problems.append(f"dataset.resolution: digits supports 8, 16 or 32, got {ds.resolution}")
    if ds.groups.boundaries is not None and (len(ds.groups.boundaries) != 2
                                             or ds.groups.boundaries[0] > ds.groups.boundaries[1]):
        problems.append(f"dataset.groups.boundaries: expected [b1, b2] with b1 <= b2, got {ds.groups.boundaries}")
    if len(ds.groups.thresholds) != 2 or ds.groups.thresholds[0] < ds.groups.thresholds[1]:
        problems.append(f"dataset.groups.thresholds: expected [many_gt, few_le] with many_gt >= few_le, "
                        f"got {ds.groups.thresholds}")
    if cfg.method.name == "contentstyle":
        p = cfg.method.params
        if p["content_dim"] + p["style_dim"] != cfg.model.z_dim:
            problems.append(f"method.content_dim + method.style_dim must equal model.z_dim "
                            f"({p['content_dim']} + {p['style_dim']} != {cfg.model.z_dim})")
    if cfg.train.seed + cfg.ensemble.size - 1 > SEED_MAX:  # member i trains with train.seed + i
        problems.append(f"train.seed: {cfg.train.seed} + ensemble.size {cfg.ensemble.size} - 1 exceeds {SEED_MAX}")
    weights = cfg.ensemble.generator_weights
    if weights is not None:
        if len(weights) != cfg.ensemble.size:
            problems.append(f"ensemble.generator_weights: {len(weights)} weights for ensemble.size {cfg.ensemble.size}")
        elif any(w < 0 for w in weights) or sum(weights) <= 0:
            problems.append(f"ensemble.generator_weights: weights must be >= 0 with a positive sum, got {weights}")
    problems.extend(metric_registry().config_problems(cfg.eval.metrics))  # labels vs model: methods.config_problems
    if cfg.eval.min_class_samples > cfg.eval.samples_per_class:
        problems.append(f"eval.min_class_samples: {cfg.eval.min_class_samples} exceeds eval.samples_per_class "
                        f"{cfg.eval.samples_per_class} (a class G was asked for would count as under-filled)")
    if cfg.train.eval_every > cfg.train.steps:
        problems.append(f"train.eval_every: {cfg.train.eval_every} exceeds train.steps {cfg.train.steps}")
    return problems


def _to_dict(obj) -> Any:
    if isinstance(obj, MethodConfig):
        return {"name": obj.name, **copy.deepcopy(obj.params)}
    if dataclasses.is_dataclass(obj):
        return {f.name: _to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [_to_dict(v) for v in obj]
    return copy.deepcopy(obj)
