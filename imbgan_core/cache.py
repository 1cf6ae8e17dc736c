"""Content-hash keyed artifacts on disk: built once, written atomically, guarded by a file lock.

Layout: ``<cache_dir>/<kind>/<content_hash(key)>/`` holds the artifact files plus ``key.json`` (the key, for humans).
A build writes into a temporary sibling folder that is renamed into place, so a reader never sees a half-written
artifact; a per-artifact file lock makes concurrent processes build it once (the others wait, then reuse it).
Modelled on stylegan2-ada-pytorch's ``metric_utils`` statistics cache.

Damage (a truncated or overwritten file: a full disk, a copy cut short, a hand edit) is found before an artifact is
used: every build writes ``manifest.json`` (size and sha256 of each file), checked on every hit. Entries from before
the manifest are checked by format (a ``.pt`` file is a zip archive whose CRCs must match, a ``.json`` file must
parse) and then get one. A damaged entry is reported with a ``CacheDamagedWarning`` naming the folder and the file,
and rebuilt; nothing reads it.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable

from filelock import FileLock

HASH_CHARS = 16  # 64 bits of sha256: collisions are not a practical concern for a local cache
MANIFEST = "manifest.json"


class CacheDamagedWarning(UserWarning):
    """A cache entry failed its integrity check and is being rebuilt; the message names the folder and the file."""


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
    if final.is_dir() and damage(final) is not None:
        with FileLock(str(final) + ".lock"):
            problem = damage(final) if final.is_dir() else None  # another process may have rebuilt it meanwhile
            if problem is not None:
                warnings.warn(f"cache entry {final} is damaged ({problem}); rebuilding it", CacheDamagedWarning,
                              stacklevel=2)
                _discard(final)
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
        _write_manifest(tmp)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def damage(folder: Path) -> str | None:
    """Why the cache entry ``folder`` cannot be trusted ("weights.pt: 1024 bytes, expected 88341"), or None."""
    manifest_path = folder / MANIFEST
    if not manifest_path.is_file():
        problem = _legacy_damage(folder)
        if problem is None:
            try:
                _write_manifest(folder)  # adopt a sound entry built before manifests existed
            except OSError:
                pass  # a read-only cache stays usable; it is checked by format again next time
        return problem
    try:
        files = json.loads(manifest_path.read_text(encoding="utf-8"))["files"]
        entries = [(str(name), int(info["size"]), str(info["sha256"])) for name, info in files.items()]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{MANIFEST} unreadable ({type(exc).__name__})"
    for name, size, digest in entries:
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        actual = path.stat().st_size
        if actual != size:
            return f"{name}: {actual} bytes, expected {size}"
        if file_sha256(path) != digest:
            return f"{name}: content differs from when it was built (sha256)"
    return None


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _artifact_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.startswith(".tmp"))


def _write_manifest(folder: Path) -> None:
    files = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
             for p in _artifact_files(folder)}
    tmp = folder / f".tmp-{MANIFEST}-{os.getpid()}"
    tmp.write_text(json.dumps({"files": files}, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, folder / MANIFEST)


def _legacy_damage(folder: Path) -> str | None:
    """Format checks for an entry without a manifest: torch files (zip archives) and JSON files must be whole."""
    for path in _artifact_files(folder):
        name = path.relative_to(folder).as_posix()
        try:
            if path.suffix in (".pt", ".pth"):
                if not zipfile.is_zipfile(path):
                    return f"{name} is not a complete torch file"
                with zipfile.ZipFile(path) as archive:
                    bad = archive.testzip()
                if bad is not None:
                    return f"{name}: member {bad} fails its CRC check"
            elif path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            return f"{name} unreadable ({type(exc).__name__})"
    return None


def _discard(folder: Path) -> None:
    """Move a damaged entry out of the way (one rename: readers see it or nothing), then delete it."""
    aside = Path(tempfile.mkdtemp(prefix=f".damaged-{folder.name}-", dir=folder.parent))
    os.replace(folder, aside / folder.name)
    shutil.rmtree(aside, ignore_errors=True)


def tensor_digest(*tensors) -> str:
    """sha256 (first 16 hex chars) of tensors' dtypes, shapes and bytes: a content key for data without a spec."""
    digest = hashlib.sha256()
    for t in tensors:
        arr = t.detach().cpu().contiguous().numpy()
        digest.update(f"{arr.dtype}{tuple(arr.shape)}".encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:HASH_CHARS]
