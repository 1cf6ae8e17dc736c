"""imbgan_core.cache: stable content hashes, build-once artifacts, atomic writes, cross-process locking."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from imbgan_core.cache import cached, content_hash, default_cache_dir, tensor_digest


def test_content_hash_is_stable_and_order_free():
    a = {"source": "digits", "imbalance": {"ratio": 10.0, "seed": 0}, "counts": [1, 2]}
    b = {"counts": [1, 2], "imbalance": {"seed": 0, "ratio": 10.0}, "source": "digits"}
    assert content_hash(a) == content_hash(b)
    assert len(content_hash(a)) == 16 and int(content_hash(a), 16) >= 0
    assert content_hash(a) != content_hash({**a, "counts": [2, 1]})
    assert content_hash(a) != content_hash({**a, "imbalance": {"ratio": 100.0, "seed": 0}})


def test_content_hash_rejects_non_json():
    with pytest.raises(TypeError, match="JSON"):
        content_hash({"x": object()})


def test_tensor_digest_sees_values_dtype_and_shape():
    x = torch.arange(6, dtype=torch.uint8)
    assert tensor_digest(x) == tensor_digest(x.clone())
    assert tensor_digest(x) != tensor_digest(x.view(2, 3))
    assert tensor_digest(x) != tensor_digest(x.long())
    assert tensor_digest(x) != tensor_digest(torch.tensor([0, 1, 2, 3, 4, 9], dtype=torch.uint8))


def test_default_cache_dir_follows_env(monkeypatch, tmp_path):
    monkeypatch.setenv("IMBGAN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("IMBGAN_CACHE")
    assert default_cache_dir().parts[-2:] == (".cache", "imbgan")


def test_cached_builds_once_and_misses_on_a_new_key(tmp_path):
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "value.txt").write_text(str(len(builds)))

    first = cached("things", {"a": 1}, build, cache_dir=tmp_path, filename="value.txt")
    again = cached("things", {"a": 1}, build, cache_dir=tmp_path, filename="value.txt")
    other = cached("things", {"a": 2}, build, cache_dir=tmp_path, filename="value.txt")
    assert first == again and first.read_text() == "1" and len(builds) == 2
    assert other.read_text() == "2" and other.parent.name == content_hash({"a": 2})
    assert first.parent.parent == tmp_path / "things"
    assert json.loads((first.parent / "key.json").read_text()) == {"a": 1}
    assert cached("things", {"a": 1}, build, cache_dir=tmp_path) == first.parent  # folder without filename


def test_cached_uses_env_cache_dir(cache_dir):
    path = cached("env_kind", {"k": 1}, lambda folder: (folder / "f").write_text("x"), filename="f")
    assert path.is_relative_to(cache_dir)


def test_failed_build_leaves_nothing_and_retries(tmp_path):
    def broken(folder):
        (folder / "half.txt").write_text("partial")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        cached("things", {"b": 1}, broken, cache_dir=tmp_path)
    assert [p.name for p in (tmp_path / "things").iterdir() if not p.name.endswith(".lock")] == []
    path = cached("things", {"b": 1}, lambda folder: (folder / "ok").write_text("y"), cache_dir=tmp_path,
                  filename="ok")
    assert path.read_text() == "y"


def test_missing_file_in_artifact_is_a_clear_error(tmp_path):
    cached("things", {"c": 1}, lambda folder: None, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="no file 'weights.pt'"):
        cached("things", {"c": 1}, lambda folder: None, cache_dir=tmp_path, filename="weights.pt")


def test_bad_kind_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        cached("../escape", {}, lambda folder: None, cache_dir=tmp_path)


RACER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from imbgan_core.cache import cached

    def build(folder):
        with open(sys.argv[2], "a") as log:
            log.write("built\\n")
        time.sleep(1.0)  # long enough for the other process to arrive while the lock is held
        (folder / "artifact.txt").write_text("done")

    print(cached("race", {"key": 1}, build, cache_dir=sys.argv[1], filename="artifact.txt"))
""")


@pytest.mark.slow
def test_two_processes_build_once(tmp_path):
    script = tmp_path / "racer.py"
    script.write_text(RACER)
    log = tmp_path / "builds.log"
    procs = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"), str(log)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    assert log.read_text().splitlines() == ["built"]
    paths = {out.strip() for out, _ in outputs}
    assert len(paths) == 1 and open(paths.pop()).read() == "done"
