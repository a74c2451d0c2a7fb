"""Graceful stop on Ctrl-C (SIGINT) and SIGTERM (Kubernetes preemption, `kill`).

The first signal asks the run to stop after the current step, save a checkpoint and shut every
worker down; a second SIGINT stops at once (workers are still shut down, no checkpoint). Before
the first step begins (`immediate`: the workers are starting, there is nothing to save) any
signal stops at once; while the Ray cluster itself starts (`deferred`) the run stops right after. Once the shutdown of the workers has begun, signals no longer
interrupt it. Stopping at once raises KeyboardInterrupt (the CLI exits 130).
"""
from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class StopRequest:
    """Context manager installing the handlers (main thread only); `requested` says a stop is due."""

    def __init__(self, immediate: bool = False) -> None:
        self.requested: str | None = None  # the signal's name
        self.shielded = False  # set while shutting down: signals are then only acknowledged
        self.immediate = immediate  # set while starting up: a signal stops at once (nothing to save yet)
        # Set while starting something that an exception must not cut in half (ray.init: its
        # processes would be orphaned): the first signal is recorded, the caller stops after it.
        self.deferred = False
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
        if self.immediate:
            self.requested = name
            raise KeyboardInterrupt(name)  # starting up: nothing to save, stop now
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt(name)  # second Ctrl-C: stop now
        self.requested = name
        if self.deferred:
            print(f"\n[parkrl] {name}: stopping as soon as the Ray cluster is up, to shut it down cleanly (Ctrl-C "
                  f"again to stop at once)", file=sys.stderr, flush=True)
            return
        print(f"\n[parkrl] {name}: stopping after this step and saving a checkpoint "
              f"(Ctrl-C again to stop at once, without one)", file=sys.stderr, flush=True)
