"""Graceful stop on Ctrl-C (SIGINT) and SIGTERM (Kubernetes preemption, `kill`).

The first signal asks the run to stop after the current step, save a checkpoint and shut every
worker down; a second SIGINT stops at once (workers are still shut down, no checkpoint). Once
the shutdown of the workers has begun, signals no longer interrupt it.
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class StopRequest:
    """Context manager installing the handlers (main thread only); `requested` says a stop is due."""

    def __init__(self) -> None:
        self.requested: str | None = None  # the signal's name
        self.shielded = False  # set while shutting down: signals are then only acknowledged
        self._previous: dict[int, object] = {}

    def __enter__(self) -> "StopRequest":
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.shielded:
            print(f"\n[parkrl] {name}: shutting the workers down, a few seconds more", file=sys.stderr, flush=True)
            return
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.requested = name
        print(f"\n[parkrl] {name}: stopping after this step and saving a checkpoint "
              f"(Ctrl-C again to stop at once, without one)", file=sys.stderr, flush=True)
