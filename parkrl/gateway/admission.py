"""Admission control and the gateway's table of live sessions.

The table is a cache, not the source of truth: routing needs only the signed session id. It
counts sessions per run, per server and in total for the caps and for least-loaded placement.
Entries leave it when a session is closed, when its server answers 404 for it, when its server
is marked down, or when it has been idle past its idle timeout (plus a grace) - the server reaps
it then too. A gateway that restarts starts with an empty table and re-adopts each session on
its next successful call, so the caps can be exceeded for a while after a restart by the
sessions not yet seen again; they are never exceeded by new sessions from a steady gateway.
"""
from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable


@dataclass
class SessionEntry:
    """A live session as the gateway knows it."""

    run_id: str
    server_url: str
    idle_timeout_s: float
    last_used: float


@dataclass(frozen=True)
class Rejection:
    """Why a new session was refused: `reason` is a metric label, `detail` the message."""

    reason: str
    detail: str
    retry_after_s: int


class Admission:
    """Per-run and total session caps over the table of live sessions."""

    def __init__(self, max_sessions_per_run: int, max_sessions: int, default_idle_timeout_s: float,
                 retry_after_s: int = 2, idle_grace_s: float = 30.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if max_sessions_per_run < 1 or max_sessions < 1:
            raise ValueError("session caps must be >= 1")
        self.max_per_run = max_sessions_per_run
        self.max_total = max_sessions
        self.default_idle_timeout_s = default_idle_timeout_s
        self.retry_after_s = retry_after_s
        self.idle_grace_s = idle_grace_s
        self._clock = clock
        self.sessions: dict[str, SessionEntry] = {}
        self._run: Counter[str] = Counter()      # live + pending, per run
        self._server: Counter[str] = Counter()   # live + pending, per server URL
        self._pending = 0

    # ---- counts
    def total(self) -> int:
        """Live sessions plus creations in flight."""
        return len(self.sessions) + self._pending

    def for_run(self, run_id: str) -> int:
        return self._run[run_id]

    def for_server(self, server_url: str) -> int:
        return self._server[server_url]

    def runs(self) -> dict[str, int]:
        return {r: n for r, n in self._run.items() if n}

    # ---- new sessions
    def reserve(self, run_id: str) -> Rejection | None:
        """Takes a slot for a session `run_id` is about to create, or says why not."""
        if self._run[run_id] >= self.max_per_run:
            return Rejection("run_cap", f"run {run_id!r} has {self._run[run_id]} open sandbox sessions, its cap "
                             f"(--max-sessions-per-run {self.max_per_run}); close one first",
                             self.retry_after_s)
        if self.total() >= self.max_total:
            return Rejection("total_cap", f"the gateway has {self.total()} open sandbox sessions, its cap "
                             f"(--max-sessions {self.max_total})", self.retry_after_s)
        self._run[run_id] += 1
        self._pending += 1
        return None

    def placing(self, server_url: str, delta: int) -> None:
        """Counts (+1) or uncounts (-1) a creation in flight on `server_url` for placement."""
        self._server[server_url] += delta

    def commit(self, session_id: str, run_id: str, server_url: str, idle_timeout_s: float | None) -> None:
        """The reserved slot became session `session_id` on `server_url` (already `placing` there)."""
        self._pending -= 1
        self.sessions[session_id] = SessionEntry(run_id, server_url, idle_timeout_s or self.default_idle_timeout_s,
                                                 self._clock())

    def release(self, run_id: str) -> None:
        """The reserved slot was not used (the creation failed)."""
        self._pending -= 1
        self._run[run_id] -= 1

    # ---- existing sessions
    def touch(self, session_id: str, run_id: str, server_url: str) -> None:
        """Marks a session used now; adopts it when the table does not know it (gateway restart)."""
        entry = self.sessions.get(session_id)
        if entry is None:
            self.sessions[session_id] = SessionEntry(run_id, server_url, self.default_idle_timeout_s, self._clock())
            self._run[run_id] += 1
            self._server[server_url] += 1
        else:
            entry.last_used = self._clock()

    def drop(self, session_id: str) -> bool:
        """Forgets a session (closed, or unknown to its server). True when it was in the table."""
        entry = self.sessions.pop(session_id, None)
        if entry is None:
            return False
        self._run[entry.run_id] -= 1
        self._server[entry.server_url] -= 1
        return True

    def drop_server(self, server_url: str) -> int:
        """Forgets every session on a server that went down; returns how many."""
        gone = [sid for sid, e in self.sessions.items() if e.server_url == server_url]
        for sid in gone:
            self.drop(sid)
        return len(gone)

    def prune_idle(self) -> int:
        """Forgets sessions idle past their idle timeout plus the grace; returns how many."""
        now = self._clock()
        gone = [sid for sid, e in self.sessions.items() if now - e.last_used > e.idle_timeout_s + self.idle_grace_s]
        for sid in gone:
            self.drop(sid)
        return len(gone)
