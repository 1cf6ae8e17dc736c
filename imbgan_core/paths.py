"""Can a folder be used for output? Checked before any work starts, so a bad output path fails at once, naming it.

``folder_problems(path, flag, name)`` says why ``path`` cannot be, or become, a writable folder holding a child
``name`` (missing parents are fine: they would be created); it creates nothing that outlives the call (writability
is probed with a temporary file, removed at once, because root's permission bits say nothing). Used by
``python -m imbgan_core.train --out`` and by the sweep CLI's preflight (``trainables.preflight``).
"""
from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path

# A sweep folder may get a "-NNN" suffix (trainables.claim); Ray's trial folders and checkpoint files add up to
# this many characters below it (trial folder, checkpoint_00000N/..., evaluation artifacts).
SUFFIX_CHARS = 4
PATH_MARGIN = 256


def folder_problems(path: str | os.PathLike, flag: str, name: str | None) -> list[str]:
    """Why ``path`` cannot be (or become) a writable folder holding ``name``; [] when it can. Creates nothing."""
    try:
        root = Path(path).expanduser().absolute()
    except (RuntimeError, OSError, ValueError) as exc:
        return [f"{flag} {path}: not a usable path ({exc})"]
    if "\0" in str(root):
        return [f"{flag} {path!r}: contains a NUL byte"]
    existing = root
    while not _exists(existing):
        if _exists(existing, follow=False):
            return [f"{flag} {path}: {existing} is a dangling symbolic link"]
        existing = existing.parent
    if not existing.is_dir():
        where = "is a file" if existing == root else f"lies under {existing}, which is a file"
        return [f"{flag} {path}: {where}, not a folder"]
    problems = []
    name_max = _pathconf(existing, "PC_NAME_MAX", 255)
    path_max = _pathconf(existing, "PC_PATH_MAX", 4096)
    missing = root.relative_to(existing).parts
    too_long = [part for part in missing if len(part.encode()) > name_max]
    if too_long:
        problems.append(f"{flag} {path}: folder name {too_long[0][:40]!r}... is longer than this filesystem allows "
                        f"({name_max} bytes)")
    if name is not None and len(name.encode()) + SUFFIX_CHARS > name_max:
        problems.append(f"{flag} {path}: the sweep name ({len(name.encode())} bytes) leaves no room for a folder "
                        f"suffix on this filesystem ({name_max} bytes per name); shorten the space's name")
    if name is not None and len(str(root / name).encode()) + SUFFIX_CHARS + PATH_MARGIN > path_max:
        problems.append(f"{flag} {path}: {root / name} is too long for this filesystem's paths ({path_max} bytes "
                        f"with room for trial folders); use a shorter results path or sweep name")
    writable = _writable(existing)
    if writable is not None:
        what = f"{existing} (where it would be created)" if existing != root else str(existing)
        problems.append(f"{flag} {path}: cannot write in {what}: {writable}")
    return problems


def _writable(folder: Path) -> str | None:
    """None when a file can be created in ``folder`` (tried, then removed), else the reason."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return "permission denied"
    try:
        fd, probe = tempfile.mkstemp(prefix=".imbgan-write-probe-", dir=folder)
    except OSError as exc:
        return os.strerror(exc.errno) if exc.errno else str(exc)
    os.close(fd)
    try:
        os.unlink(probe)
    except OSError as exc:  # pragma: no cover - a folder that lets us create but not delete
        return f"created {probe} but could not remove it ({os.strerror(exc.errno or errno.EIO)})"
    return None


def _pathconf(folder: Path, key: str, default: int) -> int:
    try:
        return int(os.pathconf(folder, key))
    except (OSError, ValueError):
        return default


def _exists(path: Path, follow: bool = True) -> bool:
    """``Path.exists`` (``follow=False``: the link itself) that treats a name the filesystem refuses (too long,
    ...) as missing: the checks above report it."""
    try:
        os.stat(path, follow_symlinks=follow)
    except OSError:
        return False
    return True
