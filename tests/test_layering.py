"""The layering of docs/design.md: ``imbgan_core`` is pure PyTorch; Ray, Optuna, MLflow and trainables sit above it."""
from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parents[1] / "imbgan_core"
FORBIDDEN = ("ray", "optuna", "mlflow", "trainables")


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_imports_no_orchestration_library():
    files = sorted(CORE.rglob("*.py"))
    assert len(files) > 20  # the walk found the package
    offending = {str(f.relative_to(CORE)): sorted(imported_roots(f) & set(FORBIDDEN)) for f in files}
    assert {k: v for k, v in offending.items() if v} == {}


def test_the_check_sees_an_offending_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nif True:\n    from ray import tune\n")
    assert imported_roots(bad) & set(FORBIDDEN) == {"ray"}
