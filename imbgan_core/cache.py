"""Content-hash keyed artifacts on disk: built once, written atomically, guarded by a file lock.

Layout: ``<cache_dir>/<kind>/<content_hash(key)>/`` holds the artifact files plus ``key.json`` (the key, for humans).
A build writes into a temporary sibling folder that is renamed into place, so a reader never sees a half-written
artifact; a per-artifact file lock makes concurrent processes build it once (the others wait, then reuse it).
Modelled on stylegan2-ada-pytorch's ``metric_utils`` statistics cache.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from filelock import FileLock

HASH_CHARS = 16  # 64 bits of sha256: collisions are not a practical concern for a local cache


def default_cache_dir() -> Path:
    """``$IMBGAN_CACHE`` when set, else ``~/.cache/imbgan``."""
    env = os.environ.get("IMBGAN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "imbgan"


def content_hash(obj) -> str:
    """Stable sha256 (first 16 hex chars) of a JSON-able value; dict key order does not matter."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"content_hash needs a JSON-able value (dict/list/str/number): {exc}") from None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:HASH_CHARS]


def cached(kind: str, key: dict, build: Callable[[Path], None], cache_dir: str | Path | None = None,
           filename: str | None = None) -> Path:
    """Path of the artifact for ``key`` (its folder, or ``filename`` inside it), building it once if missing.

    ``build(tmp_dir)`` writes the artifact's files into ``tmp_dir``; on success the folder is renamed into place.
    If ``build`` raises, nothing is left behind and the error propagates.
    """
    if not kind or "/" in kind or kind.startswith("."):
        raise ValueError(f"cache kind must be a plain folder name, got {kind!r}")
    root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    kind_dir = root / kind
    final = kind_dir / content_hash(key)
    target = final / filename if filename else final
    if not final.is_dir():
        kind_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(final) + ".lock"):
            if not final.is_dir():  # another process may have built it while we waited for the lock
                _build_atomically(final, key, build)
    if filename and not target.exists():
        raise FileNotFoundError(f"cache artifact {final} has no file {filename!r}; delete the folder to rebuild it")
    return target


def _build_atomically(final: Path, key: dict, build: Callable[[Path], None]) -> None:
    """Run ``build`` in a temporary sibling folder, then rename it to ``final`` (nothing is left on failure)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    try:
        build(tmp)
        (tmp / "key.json").write_text(json.dumps(key, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def tensor_digest(*tensors) -> str:
    """sha256 (first 16 hex chars) of tensors' dtypes, shapes and bytes: a content key for data without a spec."""
    digest = hashlib.sha256()
    for t in tensors:
        arr = t.detach().cpu().contiguous().numpy()
        digest.update(f"{arr.dtype}{tuple(arr.shape)}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:HASH_CHARS]
