"""A background writer for the MLflow store: Ray's callback hooks enqueue, one thread writes (issue #12, item 4).

Why: a write to an unreachable ``mlflow server`` blocks inside MLflow's own HTTP retries (7 retries with
exponential backoff by default: ~250 s per call), and Ray calls its callbacks on the driver's scheduling thread,
so a synchronous write froze the whole sweep. Here the hooks only put a task on a bounded queue and return, and a
single daemon thread executes the tasks one at a time, in order (order matters: a trial's run must not be set
RUNNING again after it was terminated, so nothing is ever written concurrently or out of order).

Outages: a task that fails with a connection-type error (refused, timeout, HTTP 5xx/429, a locked sqlite file) is
kept at the head of the queue and retried once the store answers again (``/health`` for a server); a task that has
been in flight longer than ``stall_s`` (MLflow retrying inside the call) while ``/health`` does not answer means the
same. Either prints ONE warning line when the store becomes unreachable and ONE when it is back, each with the
number of pending writes. A task that fails for any other reason (a rejected value, a deleted run, a checkpoint
folder already gone) is dropped with a warning and counted in ``failed``.

Bounded queue: when ``maxsize`` tasks are pending, a new task evicts the oldest droppable one (``RESULT`` first,
then ``ARTIFACT``) and counts it in ``dropped``; ``ESSENTIAL`` tasks (run creation, termination, the final sync)
are never dropped, so the queue can exceed ``maxsize`` by those only (a few per trial). Dropped metrics are not
lost: the end-of-sweep ``sync`` writes every step the store lacks from Ray's own records.
"""
from __future__ import annotations

import collections
import threading
import time
import urllib.request
from typing import Callable

from mlflow.exceptions import MlflowException

RESULT, ARTIFACT, ESSENTIAL = "result", "artifact", "essential"
DROP_ORDER = (RESULT, ARTIFACT)  # on overflow, the oldest task of the first kind present is evicted
MAXSIZE = 10_000  # pending tasks: ~1 KB each; an outage of an hour with 16 trials reporting every 10 s fits
STALL_S = 10.0  # a write in flight this long, with the server's /health not answering, means "unreachable"
PROBE_S = 2.0  # while unreachable: how often /health (a server) is probed, or the base backoff (sqlite)
MAX_BACKOFF_S = 30.0
MAX_TRIES_WHILE_HEALTHY = 5  # failing this often while the server says it is healthy: a bad task, not an outage
HEALTH_TIMEOUT_S = 3.0
IDLE_EXIT_S = 30.0  # the writer thread ends after this long with nothing to do; the next write starts it again
_MAX_FAILURE_LINES = 5  # lines about individual failed tasks; later ones are only counted


class Task:
    """One write: ``fn(client)`` run on the writer thread; ``wait`` returns its value or raises its error."""

    __slots__ = ("kind", "label", "fn", "done", "value", "error", "dropped")

    def __init__(self, kind: str, label: str, fn: Callable):
        self.kind, self.label, self.fn = kind, label, fn
        self.done = threading.Event()
        self.value = self.error = None
        self.dropped = False

    def finish(self, value=None, error: BaseException | None = None, dropped: bool = False) -> None:
        self.value, self.error, self.dropped = value, error, dropped
        self.done.set()


class MlflowWriter:
    """A serial, non-blocking writer to one MLflow store; see the module docstring.

    ``client_factory`` builds the client on the writer thread when the first task runs (nothing touches the network
    before). ``log`` receives the console lines (``print`` by default).
    """

    def __init__(self, tracking_uri: str, client_factory: Callable, maxsize: int = MAXSIZE,
                 stall_s: float = STALL_S, probe_s: float = PROBE_S, log: Callable[[str], None] | None = None):
        self.tracking_uri = tracking_uri
        self._client_factory = client_factory
        self._client = None
        self.maxsize, self.stall_s, self.probe_s = max(1, int(maxsize)), stall_s, probe_s
        self._log = log or (lambda line: print(line, flush=True))
        self._cond = threading.Condition()
        self._queue: collections.deque[Task] = collections.deque()
        self._inflight: Task | None = None
        self._inflight_since = 0.0
        self._writing = False  # a writer thread is running (set and cleared under the lock, never left stale)
        self._watching = False  # the watchdog thread is running
        self._closing = False  # no new tasks; the thread exits when the queue is empty
        self._abandon = False  # the thread exits after the task in flight; the rest is discarded
        self.down_since: float | None = None  # monotonic time the store was found unreachable; None while it is up
        self.outages = 0
        self.dropped = {RESULT: 0, ARTIFACT: 0}
        self.failed = 0  # tasks that failed for good (not an outage); sync() writes the records they missed
        self.discarded = 0  # tasks left unwritten by close() on a store that never came back
        self.completed = 0
        self.last_progress = time.monotonic()
        self._failure_lines = 0

    # -- producer side (any thread, never blocks on the store) ----------------------------------------------------
    def submit(self, kind: str, label: str, fn: Callable) -> Task:
        """Queue ``fn(client)``; returns at once. On a full queue the oldest droppable task makes room."""
        task = Task(kind, label, fn)
        with self._cond:
            if self._closing:
                raise RuntimeError(f"the MLflow writer for {self.tracking_uri} is closed")
            if len(self._queue) >= self.maxsize:
                self._evict(task)
            if not task.dropped:
                self._queue.append(task)
                self._cond.notify_all()
            self._start_locked()
        return task

    def _evict(self, newcomer: Task) -> None:
        """Make room for ``newcomer``: evict the oldest RESULT, else the oldest ARTIFACT; a droppable newcomer with
        nothing older of its kind is itself the one dropped; an ESSENTIAL one is always kept."""
        for kind in DROP_ORDER:
            victim = next((t for t in self._queue if t.kind == kind), None)
            if victim is not None:
                self._queue.remove(victim)
                self.dropped[kind] += 1
                victim.finish(dropped=True)
                return
            if newcomer.kind == kind:
                self.dropped[kind] += 1
                newcomer.finish(dropped=True)
                return

    @property
    def pending(self) -> int:
        """Writes not done yet: queued plus the one in flight."""
        with self._cond:
            return len(self._queue) + (self._inflight is not None)

    @property
    def is_down(self) -> bool:
        return self.down_since is not None

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued write is done, at most ``timeout_s``; True when nothing is pending."""
        deadline = time.monotonic() + max(0.0, timeout_s)
        with self._cond:
            while self._queue or self._inflight is not None:
                left = deadline - time.monotonic()
                if left <= 0 or not self._writing:
                    break
                self._cond.wait(min(left, 0.5))
            return not self._queue and self._inflight is None

    def wait(self, tasks: list[Task], stall_timeout_s: float) -> list[Task]:
        """Wait for ``tasks``; TimeoutError when no write at all completed for ``stall_timeout_s`` (the store is
        down, or stuck) while some are unfinished. A slow store that keeps making progress is waited for."""
        start = time.monotonic()
        with self._cond:
            while not all(t.done.is_set() for t in tasks):
                quiet = time.monotonic() - max(start, self.last_progress)
                if quiet > stall_timeout_s or not self._writing:
                    left = sum(not t.done.is_set() for t in tasks)
                    raise TimeoutError(f"MLflow store {self.tracking_uri} did not answer for {quiet:.0f} s; "
                                       f"{left} of {len(tasks)} write(s) not done, {self.pending} pending")
                self._cond.wait(0.5)
        return tasks

    def close(self, timeout_s: float = 10.0) -> bool:
        """Write what is pending (at most ``timeout_s``), then stop. True when everything was written; otherwise
        the thread is abandoned: it stops after the write in flight and the rest is discarded (counted)."""
        drained = self.flush(timeout_s)
        with self._cond:
            self._closing = True
            if not drained:
                self._abandon = True
                self.discarded += len(self._queue)
                for task in self._queue:
                    task.finish(dropped=True)
                self._queue.clear()
            self._cond.notify_all()
        return drained

    # -- writer thread ---------------------------------------------------------------------------------------------
    def _start_locked(self) -> None:
        if not self._writing and self._queue:
            self._writing = True
            threading.Thread(target=self._run, name="mlflow-writer", daemon=True).start()
        if not self._watching and self._queue:
            self._watching = True
            threading.Thread(target=self._watch, name="mlflow-watchdog", daemon=True).start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    if not self._cond.wait(IDLE_EXIT_S) and not self._queue:
                        break
                if not self._queue or self._abandon:
                    self._writing = False
                    self._cond.notify_all()
                    return
                task = self._queue.popleft()
                self._inflight, self._inflight_since = task, time.monotonic()
            try:
                self._execute(task)
            finally:
                with self._cond:
                    self._inflight = None
                    self.completed += 1
                    self.last_progress = time.monotonic()
                    self._cond.notify_all()

    def _execute(self, task: Task) -> None:
        tries_while_healthy = 0
        backoff = self.probe_s
        while True:
            with self._cond:
                self._inflight_since = time.monotonic()
            try:
                if self._client is None:
                    self._client = self._client_factory()
                value = task.fn(self._client)
            except Exception as exc:  # noqa: BLE001 - classified below: outage (retry) or a bad task (drop)
                if self._abandon:
                    task.finish(error=exc)
                    return
                if not is_outage(exc):
                    self._fail(task, exc)
                    return
                healthy = self._healthy()
                if healthy is True:
                    tries_while_healthy += 1
                    if tries_while_healthy >= MAX_TRIES_WHILE_HEALTHY:
                        self._fail(task, exc)
                        return
                else:
                    self._went_down(_first_line(exc))
                backoff = self._wait_for_store(backoff)
                if self._abandon:
                    task.finish(error=exc)
                    return
                continue
            self._came_back()
            task.finish(value)
            return

    def _fail(self, task: Task, exc: Exception) -> None:
        self.failed += 1
        task.finish(error=exc)
        self._came_back()  # the store answered (with a refusal): it is reachable
        if self._failure_lines < _MAX_FAILURE_LINES:
            self._failure_lines += 1
            more = "" if self._failure_lines < _MAX_FAILURE_LINES else "; further failed writes are only counted"
            self._log(f"warning: MLflow write '{task.label}' to {self.tracking_uri} failed ({_first_line(exc)}); "
                      f"skipped, the sweep goes on{more}")

    def _wait_for_store(self, backoff: float) -> float:
        """Sleep until the store may answer again: /health for a server, else exponential backoff; returns the next
        backoff. Wakes early when the writer is abandoned."""
        if _is_http(self.tracking_uri):
            self._sleep(self.probe_s)
            while not self._abandon and self._healthy() is not True:
                self._sleep(self.probe_s)
            return backoff
        self._sleep(backoff)
        return min(backoff * 2, MAX_BACKOFF_S)

    def _sleep(self, seconds: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._abandon, timeout=seconds)

    def _healthy(self) -> bool | None:
        """True / False from a server's ``/health``; None for a non-HTTP store (nothing to ask)."""
        if not _is_http(self.tracking_uri):
            return None
        try:
            with urllib.request.urlopen(f"{self.tracking_uri.rstrip('/')}/health", timeout=HEALTH_TIMEOUT_S) as r:
                return r.status == 200
        except Exception:  # noqa: BLE001 - refused, timeout, reset: not healthy
            return False

    def _watch(self) -> None:
        """Declare the store unreachable while a write hangs in MLflow's own retries (they last minutes)."""
        while True:
            with self._cond:
                if self._abandon or (self._inflight is None and not self._queue):
                    self._watching = False  # idle: the next submit starts it again
                    return
                stalled = (self._inflight is not None and self.down_since is None
                           and time.monotonic() - self._inflight_since > self.stall_s)
                since = time.monotonic() - self._inflight_since
            if stalled and self._healthy() is not True:
                self._went_down(f"no answer for {since:.0f} s")
            time.sleep(min(1.0, self.stall_s / 4))

    def _went_down(self, reason: str) -> None:
        with self._cond:
            if self.down_since is not None or self._abandon:  # an abandoned writer (closed) says nothing more
                return
            self.down_since = time.monotonic()
            self.outages += 1
            pending = len(self._queue) + (self._inflight is not None)
        self._log(f"warning: MLflow store {self.tracking_uri} is unreachable ({reason}); the sweep goes on, "
                  f"{pending} write(s) pending, written when it is back")

    def _came_back(self) -> None:
        with self._cond:
            if self.down_since is None or self._abandon:
                return
            seconds = time.monotonic() - self.down_since
            self.down_since = None
            pending = len(self._queue)
            dropped = sum(self.dropped.values())
        extra = (f"; {dropped} result/artifact write(s) were dropped (queue full), the end-of-sweep sync writes "
                 f"their metrics from Ray's records" if dropped else "")
        self._log(f"MLflow store {self.tracking_uri} is back after {seconds:.0f} s; writing {pending} pending "
                  f"write(s){extra}")


def is_outage(exc: BaseException) -> bool:
    """True for errors that mean "the store is not answering now" (retry later), False for a refused write."""
    if isinstance(exc, MlflowException):
        status = exc.get_http_status_code()
        return status >= 500 or status == 429
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    names = {cls.__name__ for cls in type(exc).__mro__}
    # requests / urllib3 connection errors, and sqlalchemy's OperationalError ("database is locked") without
    # importing those packages here
    return bool(names & {"ConnectionError", "Timeout", "ProtocolError", "NewConnectionError", "MaxRetryError",
                         "OperationalError", "DisconnectionError"})


def _is_http(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]
