"""Helpers for end-to-end sweep tests: run the CLI as a real subprocess, build a local multi-node Ray cluster,
kill what we started (and only that), and read back MLflow, Optuna, Ray and summary files.

Every sweep gets its own environment (``sweep_env``): a private ``RAY_TMPDIR`` (so Ray's "current cluster" file and
session dirs never meet another engineer's Ray), a random Ray auth token (token authentication on, as on a real
cluster), a temporary ``IMBGAN_CACHE`` and a unique ``IMBGAN_TEST_MARKER``: every process our CLI, cluster or MLflow
server starts inherits the marker, so leftovers are found by it and killed by pid.

Run as a script (``python tests/helpers_sweep.py cluster ...``) it hosts a ``ray.cluster_utils.Cluster`` in its own
process tree, prints one JSON line with the address, and shuts the cluster down when its stdin closes.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import yaml

REPO = Path(__file__).resolve().parents[1]
MARKER = "IMBGAN_TEST_MARKER"  # every process a test starts inherits a unique value: found by it, killed by pid
PYTHON = sys.executable

# A tiny CBGAN sweep on the embedded digits-LT: a few seconds per trial on one CPU core. Dataset and classifier
# settings equal conftest's digits_cfg, so the session cache (IMBGAN_CACHE) serves the classifiers to every sweep.
TINY_RUN = {
    "method": {"name": "cbgan", "lambda": 7.5, "alpha": 0.5, "cycle": 10},
    "dataset": {"source": "digits", "resolution": 16, "channels": 1,
                "imbalance": {"profile": "exponential", "ratio": 10}},
    "model": {"arch": "sndcgan", "width": 0.125, "z_dim": 32},
    "train": {"batch_size": 32, "steps": 60, "eval_every": 20},
    "classifier": {"epochs": 8, "batch_size": 64, "lr": 2e-3},  # = conftest.TEST_CLASSIFIER
    "eval": {"samples_per_class": 20, "metrics": ["intra_fid", "class_accuracy"]},
}
TINY_SPACE = {"method.lambda": {"loguniform": [0.5, 20.0]}}


# ----------------------------------------------------------------------------------------------------------------
# Environment and space files
# ----------------------------------------------------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def short_tmpdir(prefix: str = "imbr") -> Path:
    """A short path under /tmp: Ray's unix socket paths must stay under ~107 characters."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def sweep_env(cache_dir: Path, ray_tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for a hermetic sweep: own Ray temp dir, own auth token, own cache; nothing from ~/.ray."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "MLFLOW_"))}
    env.update({
        "IMBGAN_CACHE": str(cache_dir),
        "RAY_TMPDIR": str(ray_tmp),
        MARKER: secrets.token_hex(8),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": secrets.token_hex(16),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_DEDUP_LOGS": "0",
        "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    env.update(extra)
    return env


def space_document(name: str = "tiny", run: dict | None = None, space: dict | None = None,
                   search: dict | None = None, resources: dict | None = None) -> dict:
    """A space document: TINY_RUN / TINY_SPACE unless given, ``search`` merged over a small default."""
    return {
        "name": name,
        "run": copy.deepcopy(run if run is not None else TINY_RUN),
        "space": copy.deepcopy(space if space is not None else TINY_SPACE),
        "search": {"metric": "intra_fid", "mode": "min", "num_samples": 2,
                   "scheduler": {"asha": {"grace_period": 20, "reduction_factor": 2}},
                   "searcher": {"optuna": {"sampler": "tpe", "seed": 0}}, **(search or {})},
        "resources": resources or {"cpus_per_trial": 1, "gpus_per_trial": 0},
    }


def write_space(path: Path, **kwargs) -> Path:
    """Write ``space_document(**kwargs)`` as YAML to ``path``."""
    path.write_text(yaml.safe_dump(space_document(**kwargs), sort_keys=False))
    return path


# ----------------------------------------------------------------------------------------------------------------
# Processes: start, wait, kill only what we started
# ----------------------------------------------------------------------------------------------------------------
def cli_args(space: Path, results: Path, *extra: str) -> list[str]:
    return [PYTHON, "-m", "trainables.tune", "--space", str(space), "--results", str(results), *extra]


def run_cli(args: list[str], env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the CLI to completion; on timeout kill its process tree and fail with its output."""
    proc = start(args, env)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc, env)
        out, _ = proc.communicate()
        raise AssertionError(f"CLI did not finish in {timeout} s: {' '.join(args)}\n{tail(out)}") from None
    finally:
        kill_leftovers(env)
    return subprocess.CompletedProcess(args, proc.returncode, out, "")


def run_sweep_ok(space: Path, results: Path, cache_dir: Path, timeout: float = 400) -> dict:
    """Run a whole sweep through the CLI in a throw-away Ray temp dir; fail with its output unless it exits 0."""
    ray_tmp = short_tmpdir()
    try:
        proc = run_cli(cli_args(space, results), sweep_env(cache_dir, ray_tmp), timeout=timeout)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stdout[-4000:]
    return {"out": proc.stdout, "results": results}


def start(args: list[str], env: dict[str, str], stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """Start a process in its own session (its own process group), stdout+stderr merged as text."""
    return subprocess.Popen(args, env=env, cwd=REPO, stdin=stdin, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def kill_tree(proc: subprocess.Popen, env: dict[str, str]) -> None:
    """SIGKILL the process group of ``proc`` and every process that inherited the marker of ``env``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    kill_leftovers(env)


def kill_leftovers(env: dict[str, str], timeout: float = 10.0) -> list[int]:
    """Kill (by pid) the processes whose environment carries this ``env``'s marker; returns their pids.

    Ray's raylet, GCS and workers inherit the driver's environment, so the marker identifies exactly the processes
    this test started. ``ray stop`` is never used: it would stop other people's Ray on this machine.
    """
    marker = f"{MARKER}={env[MARKER]}".encode()
    me = os.getpid()
    pids = [pid for pid in _own_pids() if pid != me and marker in _environ(pid)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.time() + timeout
    while time.time() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.1)
    return pids


@contextlib.contextmanager
def private_workdir(cache_dir, prefix: str) -> Iterator[tuple[Path, dict[str, str]]]:
    """A short private folder (Ray sockets) and the hermetic environment of a module's sweeps; whatever they left
    running is killed and the folder removed afterwards."""
    tmp = short_tmpdir(prefix)
    env = sweep_env(Path(cache_dir), tmp / "ray")
    try:
        yield tmp, env
    finally:
        kill_leftovers(env)
        shutil.rmtree(tmp, ignore_errors=True)


def _own_pids() -> list[int]:
    uid = os.getuid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    pids.append(int(entry))
    return pids


def _environ(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return b""


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def tail(text: str | None, n: int = 60) -> str:
    return "\n".join((text or "").splitlines()[-n:])


def wait_until(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.5,
               proc: subprocess.Popen | None = None):
    """Poll ``predicate`` until it returns something truthy; fail naming ``what`` (and the process output)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited ({proc.returncode}) while waiting for {what}:\n"
                                 f"{tail(proc.stdout.read() if proc.stdout else '')}")
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


# ----------------------------------------------------------------------------------------------------------------
# A local multi-node Ray cluster in its own process tree
# ----------------------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def local_cluster(env: dict[str, str], workers: int = 2, worker_cpus: float = 2, worker_gpus: float = 1,
                  head_cpus: float = 1, timeout: float = 120) -> Iterator[dict]:
    """A head plus ``workers`` nodes (logical GPUs, no hardware) via ``ray.cluster_utils.Cluster``.

    Yields ``{"address": "ip:port", "node_ids": [...], "worker_node_ids": [...]}``; shuts down on exit.
    """
    args = [PYTHON, __file__, "cluster", "--workers", str(workers), "--worker-cpus", str(worker_cpus),
            "--worker-gpus", str(worker_gpus), "--head-cpus", str(head_cpus)]
    proc = start(args, env, stdin=subprocess.PIPE)
    watchdog = threading.Timer(timeout, kill_tree, (proc, env))  # readline below blocks; bound it
    watchdog.start()
    try:
        line = proc.stdout.readline()
        watchdog.cancel()
        if not line:
            raise AssertionError(f"the test cluster did not start:\n{tail(proc.stdout.read())}")
        yield json.loads(line)
    finally:
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        kill_tree(proc, env)


def _serve_cluster(argv: list[str]) -> None:
    """Script mode: start a Cluster, print its address as JSON, block until stdin closes, shut down."""
    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-cpus", type=float, default=2)
    parser.add_argument("--worker-gpus", type=float, default=1)
    parser.add_argument("--head-cpus", type=float, default=1)
    opts = parser.parse_args(argv)
    from ray.cluster_utils import Cluster

    node_args = {"include_dashboard": False, "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": opts.head_cpus, **node_args})
    workers = [cluster.add_node(num_cpus=opts.worker_cpus, num_gpus=opts.worker_gpus,
                                object_store_memory=node_args["object_store_memory"])
               for _ in range(opts.workers)]
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "node_ids": [n.node_id for n in cluster.list_all_nodes()],
                      "worker_node_ids": [n.node_id for n in workers]}), flush=True)
    try:
        sys.stdin.read()
    finally:
        cluster.shutdown()


class MlflowServer:
    """``mlflow server`` on 127.0.0.1 with a sqlite store in ``folder``; ``stop`` / ``start`` simulate an outage."""

    def __init__(self, env: dict[str, str], folder: Path):
        self.env = {**env, MARKER: secrets.token_hex(8)}  # its own marker: stopping it spares the sweep
        self.folder = Path(folder)
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90) -> "MlflowServer":
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [str(Path(PYTHON).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(self.port),
                "--workers", "1", "--backend-store-uri", f"sqlite:///{self.folder / 'mlflow.db'}",
                "--default-artifact-root", (self.folder / "artifacts").as_uri()]
        self.proc = start(args, self.env)
        wait_until(self.healthy, timeout, f"mlflow server on port {self.port}", proc=self.proc)
        return self

    def healthy(self) -> bool:
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            kill_tree(self.proc, self.env)
            self.proc.communicate()
            self.proc = None


# ----------------------------------------------------------------------------------------------------------------
# Readers: MLflow, Optuna, Ray's per-trial results, the sweep's own files
# ----------------------------------------------------------------------------------------------------------------
def mlflow_runs(tracking_uri: str, experiment: str) -> list:
    """Every run of ``experiment`` (parent and nested), any status."""
    from mlflow.entities import ViewType
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return client.search_runs([exp.experiment_id], run_view_type=ViewType.ALL, max_results=5000)


def split_runs(runs: list) -> tuple[list, list]:
    """(parent runs, nested trial runs) by the ``mlflow.parentRunId`` tag."""
    nested = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parents, nested


def optuna_trials(db: Path) -> list:
    """Trials of every study in an Optuna sqlite file."""
    import optuna

    storage = f"sqlite:///{db}"
    trials = []
    for summary in optuna.get_all_study_summaries(storage=storage):
        trials += optuna.load_study(study_name=summary.study_name, storage=storage).get_trials(deepcopy=False)
    return trials


def ray_results(root: Path) -> dict[str, list[dict]]:
    """Ray Tune's per-trial ``result.json`` lines under ``root``, keyed by trial id (missing files skipped)."""
    out: dict[str, list[dict]] = {}
    for path in sorted(root.rglob("result.json")):
        rows = []
        for line in path.read_text().splitlines():
            with contextlib.suppress(json.JSONDecodeError):
                rows.append(json.loads(line))
        if rows:
            out.setdefault(rows[0].get("trial_id", path.parent.name), []).extend(rows)
    return out


def live_results(env: dict[str, str], experiment: str) -> dict[str, dict[str, list[dict]]]:
    """Ray's per-trial results as the driver writes them, by Ray session, then trial id.

    The driver writes ``result.json`` into its session folder under ``RAY_TMPDIR`` at every report and copies it to
    the storage path only now and then, so this is the real-time view (and, after a ``--resume``, the new session
    holds exactly what was reported after the resume).
    """
    sessions = Path(env["RAY_TMPDIR"]) / "ray"
    out: dict[str, dict[str, list[dict]]] = {}
    for staging in sorted(sessions.glob(f"session_2*/artifacts/*/{experiment}/driver_artifacts")):  # not _latest
        out.setdefault(staging.parts[-5], {}).update(ray_results(staging))
    return out


def steps_after_resume(before: list[dict], after: list[dict]) -> list[int]:
    """The steps a trial reported after ``--resume``: rows of the new session from processes that did not report
    before (Ray copies a trial's earlier ``result.json`` rows into the new session's file)."""
    old_pids = {r.get("pid") for r in before}
    return [int(r["step"]) for r in after if "step" in r and r.get("pid") not in old_pids]


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def copy_tree(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


if __name__ == "__main__":
    if sys.argv[1:2] == ["cluster"]:
        _serve_cluster(sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} cluster [--workers N] [--worker-cpus C] [--worker-gpus G]")
