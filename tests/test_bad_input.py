"""Bad input to ``python -m trainables.tune`` (issue #7): one clear message naming every problem, exit code 2,
nothing written, and no Ray started.

Space and flag problems call the CLI's ``main(argv)`` in-process with ``--dry-run`` appended: a validation that
wrongly passed would only print the plan (exit 0, the test fails) instead of starting Ray inside pytest. Data
problems are found when the dataset is read, before Ray starts; the real subprocess exit code 2 is checked in
tests/test_faults.py (MLflow unreachable at start).
"""
from __future__ import annotations

import copy
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers_sweep import TINY_RUN, space_document, write_space
from trainables.tune import main


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """Exit code and stderr of the CLI's entry point (argparse's own errors exit through SystemExit)."""
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def space_doc(**changes) -> dict:
    """A valid tiny space document with ``changes`` applied: keys are paths with "/" (space keys contain dots)."""
    doc = space_document()
    for path, value in changes.items():
        node, parts = doc, path.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return doc


def check_rejected(tmp_path, capsys, text: str, flags: list[str], needles: list[str]) -> str:
    space = tmp_path / "space.yaml"
    space.write_text(text)
    results = tmp_path / "results"
    code, err = run_main(["--space", str(space), "--results", str(results), *flags, "--dry-run"], capsys)
    assert code == 2, f"expected exit 2, got {code}; stderr:\n{err}"
    for needle in needles:
        assert needle in err, f"{needle!r} missing from the error message:\n{err}"
    assert not results.exists(), f"{results} was written by a rejected sweep"
    return err


BAD_SPACES = {
    "not_yaml": ("name: tiny\nrun: {train: [unclosed\n", ["not valid YAML"]),
    "wrong_types": (space_doc(**{"run/train/steps": "many", "search/num_samples": "four",
                                 "resources/cpus_per_trial": "one"}),
                    ["run.train.steps: expected a number, got 'many'", "search.num_samples", "'four'",
                     "resources.cpus_per_trial", "'one'"]),
    "unknown_method": (space_doc(**{"run/method": {"name": "bigboost"}, "space": {}}),
                       ["unknown method 'bigboost'"]),
    "unknown_keys": (space_doc(**{"serach": {}, "run/train/bogus": 1, "space/train.bogus": {"uniform": [0, 1]},
                                  "search/schedular": "asha"}),
                     ["serach: unknown top-level key", "run.train.bogus: unknown key", "space.train.bogus",
                      "search.schedular: unknown key"]),
    "bad_ranges": (space_doc(**{"space": {"method.alpha": {"uniform": [0.0, 1.5]},
                                          "method.lambda": {"loguniform": [0.0, 1.0]},
                                          "train.lr_g": {"uniform": [1e-3, 1e-4]}}}),
                   ["space.method.alpha", "1.5", "space.method.lambda.loguniform", "must be > 0",
                    "space.train.lr_g.uniform: low 0.001 must be below high 0.0001"]),
    "unknown_metric": (space_doc(**{"search/metric": "intra_fidd", "run/eval/metrics": ["intra_fid", "fidd"]}),
                       ["unknown metric 'fidd'"]),
    "metric_not_computed": (space_doc(**{"search/metric": "kid"}),
                            ["search.metric: 'kid' is not produced by run.eval.metrics"]),
}


@pytest.mark.parametrize("case", sorted(BAD_SPACES))
def test_bad_space_file(case, tmp_path, capsys):
    content, needles = BAD_SPACES[case]
    text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
    err = check_rejected(tmp_path, capsys, text, [], needles)
    assert str(tmp_path / "space.yaml") in err, "the message must name the space file"


def test_missing_space_file(tmp_path, capsys):
    missing = tmp_path / "nope.yaml"
    code, err = run_main(["--space", str(missing), "--results", str(tmp_path / "r"), "--dry-run"], capsys)
    assert code == 2 and f"{missing}: file not found" in err
    assert not (tmp_path / "r").exists()


BAD_FLAGS = {
    "gpus_above_one": (["--gpus-per-trial", "1.5"], ["resources.gpus_per_trial", "1.5"]),
    "gpus_two": (["--gpus-per-trial", "2"], ["resources.gpus_per_trial", "2"]),  # a trial uses one device
    "gpus_negative": (["--gpus-per-trial", "-1"], ["resources.gpus_per_trial", "-1"]),
    "gpus_not_a_number": (["--gpus-per-trial", "half"], ["resources.gpus_per_trial", "'half'"]),
    "zero_samples": (["--num-samples", "0"], ["search.num_samples", "0"]),
    "zero_steps": (["--max-steps", "0"], ["run.train.steps"]),
    "zero_concurrency": (["--max-concurrent", "0"], ["resources.max_concurrent"]),
    "zero_cpus": (["--cpus-per-trial", "0"], ["resources.cpus_per_trial"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FLAGS))
def test_bad_flag(case, tmp_path, capsys):
    flags, needles = BAD_FLAGS[case]
    check_rejected(tmp_path, capsys, yaml.safe_dump(space_doc()), flags, needles)


def test_every_problem_in_one_message(tmp_path, capsys):
    """Several independent problems: all reported at once, one per line."""
    doc = space_doc(**{"run/train/steps": -5, "search/mode": "maximise", "resources/gpus_per_trial": 3.5,
                       "space/method.alpha": {"uniform": [0.5, 2.0]}})
    err = check_rejected(tmp_path, capsys, yaml.safe_dump(doc), ["--num-samples", "0"],
                         ["run.train.steps", "search.mode", "resources.gpus_per_trial", "space.method.alpha",
                          "search.num_samples"])
    assert err.count("\n  ") >= 5, err


# ----------------------------------------------------------------------------------------------------------------
# Data problems: found when the CLI reads the dataset, which it does before Ray starts or anything is written
# ----------------------------------------------------------------------------------------------------------------
def write_image_folder(root: Path, per_class: dict[str, int], size=(12, 12), sizes=None) -> Path:
    """root/<class>/<i>.png with random pixels; ``sizes`` cycles through several image sizes."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for name, count in per_class.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            h, w = (sizes[i % len(sizes)] if sizes else size)
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
    return root


def folder_run(root: Path) -> dict:
    run = copy.deepcopy(TINY_RUN)
    run["dataset"] = {"source": "imagefolder", "root": str(root), "resolution": 8, "channels": 3,
                      "eval_per_class": 2, "imbalance": {"profile": "none"}}
    return run


DATA_CASES = {
    "missing_folder": (lambda root: root / "does-not-exist", ["does-not-exist", "does not exist"]),
    "class_without_images": (
        lambda root: (write_image_folder(root, {"a": 6, "b": 6}), (root / "empty").mkdir(), root)[-1],
        ["class folder", "empty", "has no images"]),
    "unreadable_image": (
        lambda root: (write_image_folder(root, {"a": 6, "b": 6}), (root / "b" / "9.png").write_bytes(b"not a png"),
                      root)[-1],
        ["cannot read image", "9.png"]),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_bad_data(case, tmp_path, capsys):
    """Through the CLI entry point without --dry-run: the data is read before Ray starts, so nothing starts."""
    make, needles = DATA_CASES[case]
    root = make(tmp_path / "images")
    space = write_space(tmp_path / "space.yaml", run=folder_run(root), space={})
    results = tmp_path / "results"
    code, err = run_main(["--space", str(space), "--results", str(results), "--num-samples", "1"], capsys)
    assert code == 2, f"exit {code}:\n{err}"
    for needle in needles:
        assert needle in err, f"{needle!r} missing:\n{err}"
    leftovers = sorted(p.relative_to(results) for p in results.rglob("*")) if results.exists() else []
    assert not leftovers, f"a rejected sweep wrote {leftovers}"


def test_mixed_image_sizes_are_resized_with_one_warning(tmp_path):
    """Mixed sizes are not an error: the sweep's own data preparation (what the CLI runs before Ray starts) resizes
    every image and names the folder in a single warning."""
    from trainables.assets import prepare_sweep_assets
    from trainables.spaces import load_space

    root = write_image_folder(tmp_path / "images", {"a": 7, "b": 6}, sizes=[(12, 12), (20, 16), (9, 30)])
    space = load_space(str(write_space(tmp_path / "space.yaml", run=folder_run(root), space={})))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assets = prepare_sweep_assets(space, log=lambda message: None)
    messages = [str(w.message) for w in caught if "different sizes" in str(w.message)]
    assert len(messages) == 1 and str(root) in messages[0], messages
    assert tuple(assets.data.train.images.shape[1:]) == (3, 8, 8)


# ----------------------------------------------------------------------------------------------------------------
# Untrusted files: YAML tags and pickled checkpoints never execute code
# ----------------------------------------------------------------------------------------------------------------
def test_yaml_python_tags_are_refused(tmp_path, capsys):
    marker = tmp_path / "pwned"
    text = f"name: evil\nrun: !!python/object/apply:os.system ['touch {marker}']\n"
    check_rejected(tmp_path, capsys, text, [], ["not valid YAML"])
    assert not marker.exists()


class _Payload:
    """Unpickling this touches a file: what a malicious checkpoint would do."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_checkpoint_with_code_is_refused(tmp_path, digits_data):
    import torch

    from helpers_gan import tiny_assets, tiny_cfg
    from imbgan_core.training import CheckpointError, Run

    run = Run(tiny_cfg("cgan"), assets=tiny_assets(digits_data), device="cpu")
    marker = tmp_path / "pwned"
    folder = tmp_path / "ckpt"
    run.save(folder)
    state = torch.load(folder / "checkpoint.pt", weights_only=True)
    state["method"] = {"payload": _Payload(str(marker))}
    torch.save(state, folder / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="checkpoint.pt"):
        run.load(folder)
    assert not marker.exists(), "loading a checkpoint executed code"


PROJECT = Path(__file__).resolve().parents[1]


def python_sources() -> list[Path]:
    return sorted(p for folder in ("imbgan_core", "trainables", "bench") for p in (PROJECT / folder).rglob("*.py"))


def test_sources_use_safe_loaders_and_local_binds():
    """Every yaml load is safe_load, every torch.load passes weights_only=True, nothing binds 0.0.0.0."""
    import ast

    problems = []
    for path in python_sources():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            owner = getattr(node.func.value, "id", None)
            if owner == "yaml" and node.func.attr in ("load", "load_all", "unsafe_load", "full_load"):
                problems.append(f"{path}:{node.lineno}: yaml.{node.func.attr}")
            if owner == "torch" and node.func.attr == "load":
                safe = any(k.arg == "weights_only" and getattr(k.value, "value", None) is True for k in node.keywords)
                if not safe:
                    problems.append(f"{path}:{node.lineno}: torch.load without weights_only=True")
        if "0.0.0.0" in path.read_text():
            problems.append(f"{path}: mentions 0.0.0.0")
    makefile = (PROJECT / "Makefile").read_text()
    ui = [line for line in makefile.splitlines() if "mlflow ui" in line or "mlflow server" in line]
    problems += [f"Makefile: {line.strip()}" for line in ui if "--host 127.0.0.1" not in line]
    assert not problems, "\n".join(problems)
