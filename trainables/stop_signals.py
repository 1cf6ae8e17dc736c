"""Ctrl-C and SIGTERM stop a sweep the way Ray stops it gracefully, and the driver knows it was stopped.

Ray's own SIGINT handler ends ``Tuner.fit`` quietly: fit returns as if the sweep had finished, so an interrupted
trial used to look like an ASHA stop (issue #12). Here Ray's SIGINT handler is switched off
(``TUNE_DISABLE_SIGINT_HANDLER``) and this module handles SIGINT and SIGTERM: the first signal is remembered and
handed to the handler Ray installs on SIGUSR1 during ``fit`` (the same graceful stop: experiment state saved,
trials stopped, fit returns); a second signal, or one before ``fit`` has started, raises ``KeyboardInterrupt``.
The exit code is then 128 + the signal number (130 for SIGINT, 143 for SIGTERM), as shells expect.
"""
from __future__ import annotations

import contextlib
import os
import signal

HANDLED = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """Context manager: while active, SIGINT/SIGTERM request Ray's graceful stop; ``received`` tells which came."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict[int, object] = {}
        self._fitting = False

    def __enter__(self) -> "StopSignals":
        os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
        for sig in HANDLED:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def reinstall(self) -> None:
        """Take the signals back after ``ray.init``: Ray's core worker installs its own SIGTERM handler (it prints
        "SIGTERM received" and aborts the driver with SIGABRT, leaving nothing recorded)."""
        for sig in HANDLED:
            signal.signal(sig, self._handle)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    @contextlib.contextmanager
    def during_fit(self):
        """Mark the span of ``Tuner.fit``: only there does a first signal go to Ray's graceful stop."""
        self._fitting = True
        try:
            yield
        finally:
            self._fitting = False

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received) if self.received else 0

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""

    def _handle(self, signum, frame) -> None:
        first = self.received is None
        self.received = self.received or signum
        ray_stop = signal.getsignal(signal.SIGUSR1)  # Ray's graceful stop, installed by fit
        if first and self._fitting and callable(ray_stop):
            print(f"\n{signal.Signals(signum).name}: stopping the sweep after saving its state (send it again to "
                  f"stop at once)", flush=True)
            ray_stop(signal.SIGUSR1, frame)
            return
        raise KeyboardInterrupt
