"""The sweep folder, claimed before anything else happens: two drivers never share one (issue #12).

A new sweep takes ``results/<name>``, else ``<name>-2``, ``-3``, ...: the first whose ``mkdir`` succeeds (atomic,
so two sweeps started at once get different folders) and whose Ray experiment does not exist on the storage path.
The driver then holds an exclusive ``flock`` on ``<folder>/.sweep.lock`` for its lifetime; the kernel releases it
when the process ends, however it ends (SIGKILL included), so a stale lock never blocks ``--resume``. ``--resume``
takes the latest existing folder and fails at once, naming it, while another driver holds the lock.
"""
from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

LOCK_FILE = ".sweep.lock"
MAX_SUFFIX = 1000


class ClaimError(RuntimeError):
    """The sweep folder cannot be claimed: nothing to resume, or another driver is running it."""


class SweepFolder:
    """A claimed sweep folder; ``release(remove=True)`` undoes a claim whose sweep never started."""

    def __init__(self, path: Path, created: bool, lock_fd: int):
        self.path, self.created, self._lock_fd = path, created, lock_fd

    @property
    def name(self) -> str:
        return self.path.name

    def release(self, remove: bool = False) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        if remove and self.created:
            shutil.rmtree(self.path, ignore_errors=True)


def claim_sweep_dir(results: Path, storage_path: str | None, name: str, resume: bool) -> SweepFolder:
    """Claim results/<name> (or the next free name) for a new sweep, or the latest existing one for --resume."""
    candidates = [results / name] + [results / f"{name}-{i}" for i in range(2, MAX_SUFFIX)]

    def ray_experiment_exists(candidate: Path) -> bool:
        if not storage_path or "://" in storage_path:
            return (candidate / "tuner.pkl").exists()
        return (Path(storage_path) / candidate.name / "tuner.pkl").exists()

    if resume:
        existing = [c for c in candidates if c.exists() or ray_experiment_exists(c)]
        if not existing:
            raise ClaimError(f"--resume: no sweep {name!r} under {results} to continue")
        folder = existing[-1]
        folder.mkdir(parents=True, exist_ok=True)  # a sweep whose results folder is gone but whose Ray state is kept
        return SweepFolder(folder, created=False, lock_fd=_lock(folder, wait_hint="--resume"))
    results.mkdir(parents=True, exist_ok=True)
    for candidate in candidates:
        if ray_experiment_exists(candidate):
            continue
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return SweepFolder(candidate, created=True, lock_fd=_lock(candidate, wait_hint="a new sweep"))
    raise ClaimError(f"no free sweep folder {name}-N under {results} (N < {MAX_SUFFIX})")


def _lock(folder: Path, wait_hint: str) -> int:
    fd = os.open(folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ClaimError(f"{wait_hint}: sweep {folder} is running (driver pid {holder} holds {folder / LOCK_FILE}); "
                         f"wait for it to end or stop it, then --resume") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    return fd
