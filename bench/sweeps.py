"""Shared by the sweep benchmarks: run ``python -m trainables.tune`` as users do and read back its summary."""
from __future__ import annotations

import copy
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from imbgan_core.config import apply_overrides, load_yaml

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SPACE = REPO / "search_spaces" / "cbgan.yaml"


def variant(space: Path, changes: dict, name: str, folder: Path) -> Path:
    """A copy of a space file with dotted-key ``changes`` (e.g. {"search.scheduler": "fifo"}) and a new name."""
    doc = apply_overrides(copy.deepcopy(load_yaml(str(space))), {**changes, "name": name})
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_sweep(space: Path, results: Path, *flags: str) -> tuple[dict, float, Path]:
    """Run the CLI to completion (output streamed), return (summary.json, process wall seconds, sweep folder)."""
    name = load_yaml(str(space))["name"]
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "trainables.tune", "--space", str(space), "--results", str(results),
                           *flags], cwd=REPO)
    wall = time.time() - started
    if proc.returncode != 0:
        sys.exit(f"sweep {space} failed with exit code {proc.returncode}")
    summary_path = max(Path(results).glob(f"{name}*/summary.json"), key=lambda p: p.stat().st_mtime)
    return json.loads(summary_path.read_text()), wall, summary_path.parent


def usable(summary: dict) -> list[dict]:
    """Trials with a metric value (completed or stopped by ASHA), best first (summary order)."""
    return [t for t in summary["trials"] if t["state"] in ("completed", "stopped_by_asha")
            and summary["metric"] in t["metrics"]]


def scratch_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
