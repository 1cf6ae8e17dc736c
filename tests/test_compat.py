"""Issue #12 item 7: the Ray / Optuna internals trainables relies on are pinned and checked at start-up, and the
local Ray that the sweep CLI starts listens on 127.0.0.1 only."""
from __future__ import annotations

import ipaddress
import os
import re
import shutil
import socket
import time
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest

from trainables import compat

PROJECT = Path(__file__).resolve().parents[1]


def test_installed_ray_and_optuna_have_what_trainables_uses():
    compat.check_ray_internals()


def test_missing_private_attribute_is_named_with_the_ray_version(monkeypatch):
    """A Ray whose ASHA no longer has ``_num_stopped`` (as a future release might): the start-up check names the
    Ray version, the attribute and the file that uses it."""
    import ray.tune.schedulers as schedulers

    class ChangedASHA(schedulers.AsyncHyperBandScheduler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            del self._num_stopped

    monkeypatch.setattr(schedulers, "AsyncHyperBandScheduler", ChangedASHA)
    with pytest.raises(compat.IncompatibleLibraryError) as caught:
        compat.check_ray_internals()
    message = str(caught.value)
    assert f"ray {version('ray')}: AsyncHyperBandScheduler._num_stopped" in message
    assert "trainables/durable.py" in message and "pyproject.toml" in message
    assert "_brackets" not in message  # only what is missing


def _range(requirement: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
    low = re.search(r">=\s*([\d.]+)", requirement)
    high = re.search(r"<\s*([\d.]+)", requirement)
    assert low and high, f"{requirement!r} has no >= / < range"
    return tuple(map(int, low.group(1).split("."))), tuple(map(int, high.group(1).split(".")))


@pytest.mark.parametrize("package", ["ray", "optuna"])
def test_pyproject_pins_the_tested_minor_version(package):
    """Ray and Optuna are used through private state: pyproject admits only the minor version installed here (the
    one the tests ran on)."""
    deps = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]["dependencies"]
    requirement = next(d for d in deps if re.match(rf"{package}(\[|\s|>|<|=)", d))
    low, high = _range(requirement)
    installed = tuple(int(p) for p in re.findall(r"\d+", version(package))[:3])
    assert low <= installed < high, (requirement, installed)
    assert high[:2] == (installed[0], installed[1] + 1), f"{requirement}: cap at the next minor after {installed}"


def test_local_ray_environment():
    assert compat.local_ray_environment(None, {}) == compat.LOOPBACK_ENV
    assert compat.local_ray_environment("10.0.0.1:6379", {}) == {}  # joining a cluster: its own settings
    assert compat.local_ray_environment(None, {"RAY_ADDRESS": "auto"}) == {}
    assert compat.local_ray_environment(None, {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}) == {}  # the user's own


# ----------------------------------------------------------------------------------------------------------------
# What a sweep's own Ray listens on
# ----------------------------------------------------------------------------------------------------------------
def _decode(hex_addr: str) -> ipaddress._BaseAddress:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ipaddress.IPv4Address(raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))  # /proc/net/tcp6: four little-endian words
    return ipaddress.IPv6Address(words)


def listening_sockets(pids: list[int]) -> set[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP socket the processes ``pids`` hold (Linux /proc)."""
    owner = {}
    for pid in pids:
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owner[target[8:-1]] = name
        except OSError:
            continue
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in owner:  # 0A: LISTEN
                addr, port = fields[1].split(":")
                found.add((str(_decode(addr)), int(port, 16), owner[fields[9]]))
    return found


def _is_loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address)
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads listening sockets from Linux /proc")
def test_local_sweep_ray_listens_on_loopback_only(tmp_path, cache_dir):
    """A real one-trial sweep through the CLI (no --address): every TCP socket its processes listen on (GCS,
    raylet, object manager, workers, runtime-env agent, the driver) is bound to 127.0.0.1."""
    from helpers_sweep import (_environ, _own_pids, cli_args, kill_tree, short_tmpdir, start, sweep_env, tail,
                               write_space)

    space = write_space(tmp_path / "space.yaml", name="loopback", space={},
                        search={"num_samples": 1, "scheduler": "fifo"})
    ray_tmp = short_tmpdir()
    env = sweep_env(cache_dir, ray_tmp)
    marker = f"IMBGAN_TEST_MARKER={env['IMBGAN_TEST_MARKER']}".encode()
    proc = start(cli_args(space, tmp_path / "results", "--max-steps", "40"), env)
    seen: set = set()
    try:
        deadline = time.time() + 400
        while proc.poll() is None and time.time() < deadline:
            pids = [pid for pid in _own_pids() if marker in _environ(pid)]
            seen |= listening_sockets(pids)
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=60)
    finally:
        kill_tree(proc, env)
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, tail(out)
    names = {name for _, _, name in seen}
    assert "gcs_server" in names and "raylet" in names, seen
    exposed = sorted(s for s in seen if not _is_loopback(s[0]))
    assert not exposed, f"listening beyond 127.0.0.1 on {socket.gethostname()}: {exposed}"
