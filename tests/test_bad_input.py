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


# ----------------------------------------------------------------------------------------------------------------
# Issue #12 item 5: every CLI, run as a real subprocess, refuses every bad input with exit 2, before Ray starts, in
# a short message that names the file, key or value, and leaves nothing behind (results folder, --out, Ray's temp
# folder). Each case is one class of input; variations of each class are in the in-process tests further down.
# ----------------------------------------------------------------------------------------------------------------
MAX_MESSAGE_CHARS = 2000


def billion_laughs(levels: int = 9) -> str:
    """A ~500-byte YAML document whose ``name`` expands to 9^9 strings through aliases of aliases."""
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return "\n".join(lines) + f"\nname: *a{levels - 1}\n"


def tiny_space_text(**changes) -> str:
    return yaml.safe_dump(space_doc(**changes), sort_keys=False)


def unwritable_folder(path: Path) -> Path:
    """A folder nobody can create files in: mode 0555, and for root (whom modes do not stop) the immutable flag."""
    import os
    import shutil
    import subprocess

    path.mkdir()
    path.chmod(0o555)
    if os.geteuid() == 0:
        if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            pytest.skip("running as root without chattr +i: no folder is unwritable")
    return path


def release_folder(path: Path) -> None:
    import os
    import subprocess

    if path.exists() and os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
    if path.exists():
        path.chmod(0o755)


TUNE, TRAIN, DATA = "trainables.tune", "imbgan_core.train", "imbgan_core.data"


def _sweep(space_text: str | bytes | None = None, flags: tuple = (), space: str | None = None):
    """A sweep-CLI case: (module, files to write, argv builder); ``{tmp}`` in flags is the test's folder."""
    files = {} if space_text is None else {"space.yaml": space_text}
    return TUNE, files, ["--space", space or "{tmp}/space.yaml", "--results", "{tmp}/results", *flags]


def _train(config_text: str | bytes | None, flags: tuple = ()):
    files = {} if config_text is None else {"run.yaml": config_text}
    return TRAIN, files, ["--config", "{tmp}/run.yaml", "--out", "{tmp}/results", *flags]


TRAIN_RUN = copy.deepcopy(TINY_RUN)
INCEPTION_RUN = {**copy.deepcopy(TINY_RUN), "eval": {"features": "inception", "weights_path": "{tmp}/weights.pth",
                                                      "samples_per_class": 20, "metrics": ["intra_fid"]}}

# case -> ((module, files, argv), needles that must all be in stderr, needles that must not be)
CLI_CASES = {
    # the space file itself
    "space_not_utf8": (_sweep(b"name: caf\xe9\n" + tiny_space_text().encode()), ["space.yaml", "not UTF-8"], []),
    "space_is_a_directory": (_sweep(None, space="{tmp}"), ["is a directory"], []),
    "space_deeply_nested": (_sweep("name: deep\nrun: " + "[" * 3000 + "]" * 3000 + "\n"),
                            ["space.yaml", "nested deeper than"], []),
    "alias_bomb": (_sweep(billion_laughs()), ["space.yaml", "expands to more than"], []),
    "duplicate_key": (_sweep(tiny_space_text() + "name: other\n"), ["duplicate key 'name'", "line"], []),
    # a section of the wrong type
    "search_is_a_list": (_sweep(tiny_space_text(search=[1])), ["search: expected a mapping", "[1]"], []),
    "resources_is_a_list": (_sweep(tiny_space_text(resources=[1])), ["resources: expected a mapping"], []),
    "space_is_an_empty_list": (_sweep(tiny_space_text(space=[])), ["space: expected a mapping", "[]"], []),
    "run_is_a_list": (_sweep(tiny_space_text(run=[1])), ["run: expected a run-config mapping"],
                      ["is not a parameter"]),
    "section_hidden_by_a_flag": (_sweep(tiny_space_text(search=[1]), ("--num-samples", "3")),
                                 ["search: expected a mapping", "[1]"], []),
    # an error under run: only the real problem, not the consequences of a stand-in default config
    "run_error_only_the_real_problem": (_sweep(tiny_space_text(**{"run/train/steps": "many"})),
                                        ["run.train.steps", "'many'"], ["is not a parameter", "'cgan'"]),
    # values that used to be checked only after Ray started
    "run_seed_negative": (_sweep(tiny_space_text(**{"run/train/seed": -1})), ["run.train.seed", "-1"], []),
    "imbalance_seed_negative": (_sweep(tiny_space_text(**{"run/dataset/imbalance/seed": -1})),
                                ["run.dataset.imbalance.seed", "-1"], []),
    "searcher_seed_negative": (_sweep(tiny_space_text(), ("--seed", "-1")), ["search.searcher.optuna.seed", "-1"],
                               []),
    "searcher_seed_too_large": (_sweep(tiny_space_text(**{"search/searcher/optuna/seed": 2 ** 33})),
                                ["search.searcher.optuna.seed", str(2 ** 33)], []),
    "mlflow_uri_unknown_scheme": (_sweep(tiny_space_text(), ("--mlflow-uri", "foo://nowhere")),
                                  ["--mlflow-uri foo://nowhere", "unknown scheme"], []),
    # names: a folder, an MLflow experiment, an Optuna study
    "name_dotdot": (_sweep(tiny_space_text(name="..")), ["name:", "'..'"], []),
    "name_newline": (_sweep(tiny_space_text(name="two\nlines")), ["name:", "two\\nlines"], []),
    "name_tab": (_sweep(tiny_space_text(name="a\tb")), ["name:", "a\\tb"], []),
    "name_hidden": (_sweep(tiny_space_text(name=".hidden")), ["name:", "'.hidden'"], []),
    "name_too_long": (_sweep(tiny_space_text(name="n" * 300)), ["name:", "300 characters"], []),
    # a metric's direction is known
    "mode_contradicts_metric": (_sweep(tiny_space_text(**{"search/mode": "max"})),
                                ["search.mode", "'max'", "intra_fid", "lower is better"], []),
    "mode_contradicts_accuracy": (_sweep(tiny_space_text(**{"search/metric": "class_accuracy",
                                                            "search/mode": "min"})),
                                  ["search.mode", "'min'", "class_accuracy", "higher is better"], []),
    # flags naming paths
    "results_is_a_file": (_sweep(tiny_space_text(), space=None), ["--results", "is a file"], []),
    "results_not_writable": (_sweep(tiny_space_text()), ["--results", "cannot write"], []),
    "results_component_too_long": (_sweep(tiny_space_text()), ["--results", "longer than this filesystem allows"],
                                   []),
    "storage_path_is_a_file": (_sweep(tiny_space_text(), ("--storage-path", "{tmp}/storage")),
                               ["--storage-path", "is a file"], []),
    # abbreviated flags are not flags
    "tune_abbreviated_flag": (_sweep(tiny_space_text(), ("--num-sample", "3")),
                              ["unrecognized arguments: --num-sample"], []),
    # weight files
    "inception_weights_random_bytes": (
        _sweep(yaml.safe_dump(space_document(run=INCEPTION_RUN, space={}), sort_keys=False)),
        ["weights.pth", "InceptionV3", "expected"], ["Traceback"]),
    # python -m imbgan_core.train
    "train_config_not_utf8": (_train(b"name: caf\xe9\n"), ["run.yaml", "not UTF-8"], []),
    "train_config_is_a_directory": (_train(None, ("--config", "{tmp}")), ["is a directory"], []),
    "train_config_duplicate_key": (_train("train: {steps: 5}\ntrain: {steps: 6}\n"), ["duplicate key 'train'"],
                                   []),
    "train_config_alias_bomb": (_train(billion_laughs().replace("name:", "nickname:")),
                                ["run.yaml", "expands to more than"], []),
    "train_seed_negative": (_train(yaml.safe_dump({**TRAIN_RUN, "train": {**TRAIN_RUN["train"], "seed": -1}})),
                            ["train.seed", "-1"], []),
    "train_out_is_a_file": (_train(yaml.safe_dump(TRAIN_RUN)), ["--out", "is a file"], []),
    "train_abbreviated_flag": (_train(yaml.safe_dump(TRAIN_RUN), ("--step", "1")),
                               ["unrecognized arguments: --step"], []),
    "train_inception_weights_random_bytes": (
        _train(yaml.safe_dump({**INCEPTION_RUN, "method": {"name": "cgan"}})),
        ["weights.pth", "InceptionV3", "expected"], ["Traceback"]),
    # python -m imbgan_core.data
    "data_abbreviated_flag": ((DATA, {}, ["--prof", "step"]), ["unrecognized arguments: --prof"], []),
    "data_seed_negative": ((DATA, {}, ["--seed", "-1"]), ["dataset.imbalance.seed", "-1"], []),
    "data_root_is_a_file": ((DATA, {"root": "x"}, ["--source", "imagefolder", "--root", "{tmp}/root"]),
                            ["{tmp}/root", "is a file"], []),
}


def _prepare(case: str, tmp: Path) -> None:
    """Files and folders a case needs beyond its space/config file."""
    if case in ("results_is_a_file", "train_out_is_a_file"):
        (tmp / "results").write_text("")
    elif case == "results_not_writable":
        unwritable_folder(tmp / "results")
    elif case == "storage_path_is_a_file":
        (tmp / "storage").write_text("")
    elif case in ("inception_weights_random_bytes", "train_inception_weights_random_bytes"):
        (tmp / "weights.pth").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())


def _results_left(case: str, tmp: Path) -> list[str]:
    """What a rejected command left in the results folder (a file given as --results must stay as it was)."""
    results = tmp / "results"
    if case == "results_component_too_long":
        return sorted(p.name for p in tmp.iterdir() if p.name.startswith("rrrr"))
    if not results.exists():
        return []
    if results.is_file():
        return [] if results.stat().st_size == 0 else [f"{results} was written"]
    return sorted(str(p.relative_to(results)) for p in results.rglob("*"))


def _setup_case(case: str, tmp: Path) -> tuple[str, list[str]]:
    """Write the case's files into ``tmp``; its module and argv."""
    (module, files, argv), _, _ = CLI_CASES[case]
    for name, content in files.items():
        if isinstance(content, bytes):
            (tmp / name).write_bytes(content)
        else:
            (tmp / name).write_text(content.replace("{tmp}", str(tmp)))
    _prepare(case, tmp)
    argv = [a.replace("{tmp}", str(tmp)) for a in argv]
    if case == "results_component_too_long":
        argv[argv.index("--results") + 1] = str(tmp / ("r" * 300) / "results")
    return module, argv


def _check_refusal(case: str, tmp: Path, code, out: str, err: str) -> None:
    _, needles, absent = CLI_CASES[case]
    assert code == 2, f"exit {code}; stderr:\n{err[-3000:]}\nstdout:\n{out[-2000:]}"
    for needle in (n.replace("{tmp}", str(tmp)) for n in needles):
        assert needle in err, f"{needle!r} missing from the error message:\n{err[-3000:]}"
    for needle in absent:
        assert needle not in err, f"{needle!r} should not be in the error message:\n{err[-3000:]}"
    assert len(err) + len(out) < MAX_MESSAGE_CHARS, f"{len(err)} + {len(out)} characters:\n{err[:3000]}"
    assert not _results_left(case, tmp), f"a rejected command wrote {_results_left(case, tmp)}"


# Cases that get past validation by design (the weight file is read when assets are prepared): subprocess only, so
# that a regression cannot start Ray inside pytest.
PAST_VALIDATION = {"inception_weights_random_bytes"}


@pytest.mark.parametrize("case", sorted(set(CLI_CASES) - PAST_VALIDATION))
def test_cli_refuses_bad_input(case, tmp_path, capsys):
    """Every case through the CLI's own ``main(argv)`` (the sweep CLI with --dry-run appended, so that a validation
    that wrongly passed prints the plan instead of starting Ray in pytest): exit 2, named, short, nothing written."""
    from imbgan_core.data.__main__ import main as data_main
    from imbgan_core.train import main as train_main

    module, argv = _setup_case(case, tmp_path)
    entry = {TUNE: main, TRAIN: train_main, DATA: data_main}[module]
    if module == TUNE:
        argv = [*argv, "--dry-run"]
    try:
        try:
            code = entry(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
        captured = capsys.readouterr()
        _check_refusal(case, tmp_path, code, captured.out, captured.err)
    finally:
        release_folder(tmp_path / "results")


# One case per class and CLI, as real processes (each costs a Python start with torch): the exit code a shell sees,
# and no Ray session in the process's private Ray temp folder.
SUBPROCESS_CASES = ("space_not_utf8", "alias_bomb", "run_is_a_list", "run_seed_negative", "results_is_a_file",
                    "results_not_writable", "results_component_too_long", "mlflow_uri_unknown_scheme",
                    "tune_abbreviated_flag", "inception_weights_random_bytes", "train_config_duplicate_key",
                    "train_out_is_a_file", "data_abbreviated_flag")


@pytest.mark.parametrize("case", SUBPROCESS_CASES)
def test_cli_process_refuses_before_ray(case, tmp_path, cache_dir):
    """The real CLI in a subprocess, without --dry-run, with a private Ray temp folder: exit 2, the key / path /
    value named, a short message, nothing in the results folder, and no Ray session started."""
    import shutil
    import subprocess

    from helpers_sweep import PYTHON, REPO, kill_leftovers, short_tmpdir, sweep_env

    module, argv = _setup_case(case, tmp_path)
    ray_tmp = short_tmpdir()
    env = sweep_env(cache_dir, ray_tmp)
    try:
        proc = subprocess.run([PYTHON, "-m", module, *argv], env=env, cwd=REPO, capture_output=True, text=True,
                              timeout=300, start_new_session=True)
        ray_sessions = [p.name for p in ray_tmp.rglob("session_*")]
        _check_refusal(case, tmp_path, proc.returncode, proc.stdout, proc.stderr)
        assert not ray_sessions, f"Ray was started: {ray_sessions}"
    finally:
        kill_leftovers(env)
        release_folder(tmp_path / "results")
        shutil.rmtree(ray_tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------------
# Variations of the classes above, in-process
# ----------------------------------------------------------------------------------------------------------------
def _all_paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _all_paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _all_paths(value, prefix + (i,))


WRONG_VALUES = ([1], {}, {"a": [1]}, None, "x", -1, 1e300, True, [], [[1]], 2 ** 70, float("nan"), [None])


def test_every_key_of_a_space_with_a_wrong_value_is_a_space_error(tmp_path):
    """Each key of a space (sections, nested options, distribution arguments, when:) replaced by values of other
    types: load_space accepts it or raises SpaceError with a short message; never another exception."""
    from trainables.spaces import SpaceError, load_space

    doc = space_doc(**{"space/method.alpha": {"uniform": [0.1, 0.9], "when": {"method.name": ["cbgan"]}},
                       "space/train.batch_size": {"choice": [16, 32]}})
    path = tmp_path / "space.yaml"
    crashes = []
    for where in list(_all_paths(doc))[1:]:
        for value in WRONG_VALUES:
            changed = copy.deepcopy(doc)
            node = changed
            for part in where[:-1]:
                node = node[part]
            node[where[-1]] = value
            path.write_text(yaml.safe_dump(changed))
            try:
                load_space(str(path))
            except SpaceError as exc:
                if len(str(exc)) > MAX_MESSAGE_CHARS:
                    crashes.append(f"{where} = {value!r}: {len(str(exc))}-character message")
            except Exception as exc:  # noqa: BLE001 - the point of the test
                crashes.append(f"{where} = {value!r}: {type(exc).__name__}: {exc}")
    mappings = [w for w in _all_paths(doc) if isinstance(_at(doc, w), dict)]
    for where in mappings:  # keys of other types (YAML keys can be numbers, booleans, null) in every mapping
        for key in (7, 1.5, True, None, "zz"):
            changed = copy.deepcopy(doc)
            _at(changed, where)[key] = 1
            path.write_text(yaml.safe_dump(changed))
            try:
                load_space(str(path))
            except SpaceError:
                pass
            except Exception as exc:  # noqa: BLE001 - the point of the test
                crashes.append(f"{where} + key {key!r}: {type(exc).__name__}: {exc}")
    assert not crashes, "\n".join(crashes[:20])


def _at(doc, where):
    for part in where:
        doc = doc[part]
    return doc


@pytest.mark.parametrize("text, needle", [
    ("a: 1\nb: {c: 1, d: 2, c: 3}\n", "line 2, column 17: found duplicate key 'c' (first at line 2)"),
    ("a: 1\nb: 2\na: 3\n", "line 3, column 1: found duplicate key 'a' (first at line 1)"),
    ("a: 1\n1: x\n1.0: y\n", "duplicate key 1.0"),
    ("&r [*r]\n", "recursive alias"),
    ("x: &x {a: 1}\ny: &y [*x, *x, *x, *x, *x, *x, *x, *x, *x, *x]\nz: &z [" + ", ".join(["*y"] * 10) + "]\n"
     "w: &w [" + ", ".join(["*z"] * 10) + "]\nv: &v [" + ", ".join(["*w"] * 10) + "]\nu: ["
     + ", ".join(["*v"] * 10) + "]\n", "expands to more than"),  # mappings under aliases count too
    ("[" * 200 + "]" * 200 + "\n", "nested deeper than"),
])
def test_yaml_loader_refuses(text, needle, tmp_path):
    from imbgan_core.config import ConfigError, load_yaml

    path = tmp_path / "f.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_yaml(str(path))
    message = str(caught.value)
    assert needle in message and str(path) in message and len(message) < MAX_MESSAGE_CHARS, message


def test_yaml_loader_keeps_merge_keys_and_floats(tmp_path):
    from imbgan_core.config import load_yaml

    path = tmp_path / "f.yaml"
    path.write_text("base: &b {lr: 1e-3, steps: 5}\nrun:\n  <<: *b\n  steps: 7\n")
    assert load_yaml(str(path))["run"] == {"lr": 1e-3, "steps": 7}


@pytest.mark.parametrize("make, needle", [
    (lambda tmp: tmp, "is a directory"),
    (lambda tmp: Path("/dev/null"), "not a regular file"),
    (lambda tmp: (tmp / "big.yaml", (tmp / "big.yaml").write_text("a: " + "x" * (2 << 20)))[0], "larger than"),
    (lambda tmp: (tmp / "f.yaml", (tmp / "f.yaml").write_bytes("a: 1\n".encode("utf-16")))[0], "not UTF-8"),
    (lambda tmp: (tmp / "f.yaml", (tmp / "f.yaml").write_text("a: 1"))[0] / "x.yaml", "file not found"),
])
def test_yaml_files_that_are_not_text_files(make, needle, tmp_path):
    from imbgan_core.config import ConfigError, load_yaml

    path = make(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_yaml(str(path))
    assert needle in str(caught.value) and str(path) in str(caught.value), str(caught.value)


def test_error_messages_that_quote_values_are_bounded():
    """A huge value (10 MB string, 20,000-item list) is quoted in a clipped line; many problems are capped."""
    from imbgan_core.config import ConfigError, RunConfig

    with pytest.raises(ConfigError) as caught:
        RunConfig.from_dict({"train": {"steps": "x" * 10_000_000, "lr_g": list(range(20_000))}, "name": 5,
                             **{f"bogus{i}": i for i in range(100)}})
    message = str(caught.value)
    assert "train.steps: expected a number, got 'xxx" in message and "train.lr_g" in message
    assert len(message) < 20_000 and "more problems" in message and "more characters" in message


def test_metric_directions_cover_every_metric():
    """Every scalar key has one direction, from its metric's record; the sweep's mode check reads it."""
    from imbgan_core.metrics.catalog import METRICS

    keys = METRICS.all_keys()
    assert set(keys.values()) == {"min", "max"}
    assert keys["intra_fid"] == "min" and keys["class_accuracy"] == "max" and keys["underfilled_classes"] == "min"
    assert sum(len(r.keys) for r in METRICS) == len(keys), "a key is reported by two groups"


def test_every_argument_parser_refuses_abbreviations():
    """``--num-sample 3`` must not be read as ``--num-samples``: every ArgumentParser passes allow_abbrev=False."""
    import ast

    problems = []
    for path in python_sources() + sorted((PROJECT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                    "ArgumentParser":
                if not any(k.arg == "allow_abbrev" and getattr(k.value, "value", None) is False
                           for k in node.keywords):
                    problems.append(f"{path}:{node.lineno}")
    assert not problems, "ArgumentParser without allow_abbrev=False: " + ", ".join(problems)


def test_one_yaml_parser():
    """Every YAML read in the project goes through imbgan_core.config (safe_load / load_yaml): its limits and its
    duplicate-key check hold for spaces, run configs and best.yaml alike."""
    import ast

    problems = []
    for path in python_sources():
        if path == PROJECT / "imbgan_core" / "config.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and \
                    getattr(node.func.value, "id", None) == "yaml" and "load" in node.func.attr:
                problems.append(f"{path}:{node.lineno}: yaml.{node.func.attr}")
    assert not problems, "\n".join(problems)


# ----------------------------------------------------------------------------------------------------------------
# Damaged cache entries are found, named and rebuilt
# ----------------------------------------------------------------------------------------------------------------
def test_truncated_classifier_weights_are_rebuilt_with_a_warning(tmp_path, digits_data):
    """A cached classifier whose weights.pt lost its second half (a full disk, a copy cut short): the next load
    warns naming the entry and the file, retrains it, and gives the same classifier as the first build."""
    import torch

    from imbgan_core.classifier import get_classifier
    from imbgan_core.config import ClassifierConfig

    cfg = ClassifierConfig(epochs=1, batch_size=64)
    first = get_classifier(digits_data, cfg, "annotator", cache_dir=tmp_path, log=lambda message: None)
    weights = next(tmp_path.rglob("weights.pt"))
    size = weights.stat().st_size
    with open(weights, "r+b") as fh:
        fh.truncate(size // 2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = get_classifier(digits_data, cfg, "annotator", cache_dir=tmp_path, log=lambda message: None)
    messages = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert len(messages) == 1 and str(weights.parent) in messages[0] and "weights.pt" in messages[0], messages
    assert weights.stat().st_size == size
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("damage", ["truncated", "same_size_overwrite", "deleted", "manifest_garbage",
                                    "legacy_truncated"])
def test_damaged_cache_entry_is_rebuilt(damage, tmp_path):
    import torch

    from imbgan_core.cache import cached

    builds = []

    def build(folder):
        builds.append(1)
        torch.save({"w": torch.arange(1000.0)}, folder / "weights.pt")

    path = cached("things", {"k": 1}, build, cache_dir=tmp_path, filename="weights.pt")
    raw = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(raw[:100])
    elif damage == "same_size_overwrite":
        path.write_bytes(raw[:-200] + bytes(200))
    elif damage == "deleted":
        path.unlink()
    elif damage == "manifest_garbage":
        (path.parent / "manifest.json").write_text("{not json")
    else:  # an entry written before manifests existed, then cut short
        (path.parent / "manifest.json").unlink()
        path.write_bytes(raw[:100])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = cached("things", {"k": 1}, build, cache_dir=tmp_path, filename="weights.pt")
    messages = [str(w.message) for w in caught if "damaged" in str(w.message)]
    assert len(builds) == 2 and len(messages) == 1 and str(path.parent) in messages[0], messages
    assert torch.load(again, weights_only=True)["w"].shape == (1000,)
    with warnings.catch_warnings(record=True) as caught:  # sound again: a plain hit
        warnings.simplefilter("always")
        cached("things", {"k": 1}, build, cache_dir=tmp_path, filename="weights.pt")
    assert len(builds) == 2 and not [w for w in caught if "damaged" in str(w.message)]


def test_sound_legacy_cache_entry_is_adopted(tmp_path):
    """An entry from before manifests that passes the format checks is used as is (no rebuild) and gets one."""
    import torch

    from imbgan_core.cache import cached

    builds = []

    def build(folder):
        builds.append(1)
        torch.save({"w": torch.ones(3)}, folder / "weights.pt")

    path = cached("things", {"k": 2}, build, cache_dir=tmp_path, filename="weights.pt")
    (path.parent / "manifest.json").unlink()
    assert cached("things", {"k": 2}, build, cache_dir=tmp_path, filename="weights.pt") == path
    assert len(builds) == 1 and (path.parent / "manifest.json").is_file()


# ----------------------------------------------------------------------------------------------------------------
# Preflight of the sweep CLI's paths and URIs (trainables.preflight)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("uri, needle", [
    ("foo://x", "unknown scheme 'foo'"),
    ("http://", "no host"),
    ("sqlite://", "expected sqlite:///"),
    ("sqlite:///{tmp}", "is a directory"),
    ("sqlite:///{tmp}/file/x.db", "is a file, not a folder"),
    ("file://{tmp}/file", "is a file, not a folder"),
])
def test_bad_tracking_uri(uri, needle, tmp_path):
    from trainables.preflight import PreflightError, check_tracking_uri

    (tmp_path / "file").write_text("")
    uri = uri.replace("{tmp}", str(tmp_path))
    with pytest.raises(PreflightError) as caught:
        check_tracking_uri(uri)
    assert needle in str(caught.value) and uri in str(caught.value), str(caught.value)


@pytest.mark.parametrize("uri", ["http://127.0.0.1:5000", "https://mlflow.example.org", "sqlite:///{tmp}/new/m.db",
                                 "postgresql+psycopg2://user@db/mlflow", "databricks"])
def test_good_tracking_uri(uri, tmp_path):
    from trainables.preflight import check_tracking_uri

    check_tracking_uri(uri.replace("{tmp}", str(tmp_path)))
    assert not (tmp_path / "new").exists()


def test_results_root_checks_create_nothing(tmp_path):
    from trainables.preflight import check_results_root

    check_results_root(tmp_path / "a" / "b", "tiny", str(tmp_path / "storage"))
    assert sorted(tmp_path.iterdir()) == []
