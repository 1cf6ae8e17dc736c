"""Trained ensemble members shared between trials: a member whose training inputs match is loaded, not retrained.

Member i of an ensemble trains from the run config (seed ``train.seed + i``) and, when reweighted, from the
previous members' samples; ``ensemble.size`` and ``ensemble.generator_weights`` only decide how many members follow
and how they are mixed at sampling time. So two trials of an ensemble sweep that differ only there (or only in the
reweighting, for member 0) train identical members, and the second can load the first's (issue #16 item 6).

Layout: ``<root>/ensemble_member/<content hash of the key>/`` (imbgan_core.cache: atomic, manifest-checked). The key
is the member's config without the keys that cannot change it, the member index, the device type, torch's thread
count and version, and the checkpoint format, so a hit reproduces the member bit for bit on the same setup.

Concurrency: a trial that starts training a member takes its *claim* (a file lock beside the entry); another trial
that needs the same member waits for that claim instead of training a duplicate, then loads the published member.
The claim is released when the member is published, when the trial ends (Ray stops a function trainable with
SystemExit, so ``finally`` runs) or when its process dies (the OS drops the lock). A claim never decides what is
trained, only whether a trial waits: without it (a storage that cannot lock), trials train duplicates and publish
the same member twice, which is harmless. Across nodes the root must be a shared POSIX folder (NFS/EFS: Linux
emulates flock there with byte-range locks); trainables put it under the sweep's storage path when that is one.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock

from imbgan_core.cache import cached, content_hash, damage
from imbgan_core.config import RunConfig, flatten

KIND = "ensemble_member"
FORMAT = 1
# Keys that cannot change what member i trains: how many members follow and how the ensemble mixes them.
SAMPLING_ONLY = ("name", "ensemble.size", "ensemble.generator_weights", "ensemble.reuse_members")
# Member 0 samples uniformly: the reweighting settings only reach members 1, 2, ...
REWEIGHTING = ("ensemble.reweighting", "ensemble.samples_per_class")
WAIT_NOTICE_S = 60.0  # a waiting trial says so again at most this often


def ignored_keys(cfg: RunConfig, index: int) -> tuple[str, ...]:
    """Dotted config keys that member ``index`` does not depend on (a cached member may differ from ours there)."""
    unweighted = index == 0 or cfg.ensemble.reweighting == "none"
    return SAMPLING_ONLY + (REWEIGHTING if unweighted else ())


def member_key(cfg: RunConfig, index: int, device: str, checkpoint_format: int) -> dict:
    """Everything member ``index`` of an ensemble with config ``cfg`` is a function of, as a JSON-able dict."""
    skip = set(ignored_keys(cfg, index))
    config = {k: v for k, v in flatten(cfg.to_dict()).items() if k not in skip}
    return {"format": FORMAT, "checkpoint_format": checkpoint_format, "member": index, "config": config,
            "device": torch.device(device).type, "threads": torch.get_num_threads(), "torch": torch.__version__}


class MemberCache:
    """Publish, find and claim trained members under ``root`` (shared by every trial that is given the same root)."""

    def __init__(self, root, log: Callable[[str], None] = print):
        self.root = Path(root).expanduser()
        self.log = log
        self._claims: dict[str, FileLock] = {}

    def folder(self, key: dict) -> Path:
        return self.root / KIND / content_hash(key)

    def find(self, key: dict) -> Path | None:
        """The published member's folder, or None (also for a damaged entry: ``cached`` rebuilds those)."""
        folder = self.folder(key)
        return folder if folder.is_dir() and damage(folder) is None else None

    def claim_or_find(self, key: dict, what: str) -> Path | None:
        """The published member, waiting while another trial trains it; None when this caller should train it
        (it then holds the claim until ``publish`` or ``release``)."""
        found = self.find(key)
        if found is not None:
            return found
        folder = self.folder(key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder) + ".claim")
        waited, last_notice = 0.0, -WAIT_NOTICE_S
        while not self._try(lock):
            if waited - last_notice >= WAIT_NOTICE_S:
                self.log(f"{what}: another trial is training it; waiting to reuse it ({folder})")
                last_notice = waited
            time.sleep(1.0)
            waited += 1.0
        found = self.find(key)
        if found is not None:  # the claim's holder published it while we waited
            lock.release()
            return found
        self._claims[content_hash(key)] = lock
        return None

    @staticmethod
    def _try(lock: FileLock) -> bool:
        try:
            lock.acquire(timeout=0)
            return True
        except TimeoutError:
            return False

    def publish(self, key: dict, save: Callable[[Path], None]) -> Path:
        """Write the trained member (``save(folder)``) once, atomically, and drop this caller's claim on it."""
        try:
            return cached(KIND, key, save, self.root)
        finally:
            self._release(content_hash(key))

    def release(self) -> None:
        """Drop every claim this cache object holds (the trial ends without publishing, e.g. ASHA stopped it)."""
        for name in list(self._claims):
            self._release(name)

    def _release(self, name: str) -> None:
        lock = self._claims.pop(name, None)
        if lock is not None:
            lock.release()
