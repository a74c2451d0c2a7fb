"""The sessions of one server: the cap, slots (one host uid each), lookup, idle reaping, shutdown."""
from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable

from .config import ServerConfig
from .isolation import Isolation
from .session import Session

log = logging.getLogger(__name__)


class SessionNotFound(KeyError):
    """No live session has this id."""

    def __init__(self, sid: str):
        super().__init__(sid)
        self.message = f"sandbox session '{sid}' not found (closed, reaped after idle, or never created)"

    def __str__(self) -> str:
        return self.message


class SessionCapReached(RuntimeError):
    """Every slot is taken; `retry_after_s` is when one may free up."""

    def __init__(self, message: str, retry_after_s: int):
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SessionManager:
    """Owns every sandbox of the server. Sessions and /run_code calls share `max_sessions` slots;
    slot i runs as host uid `uid_base + i`, so a slot is reused only after its sandbox is gone."""

    def __init__(self, isolation: Isolation, config: ServerConfig,
                 on_event: Callable[[str], None] | None = None):
        self.isolation = isolation
        self.config = config
        self.sessions: dict[str, Session] = {}
        self._free = list(range(config.max_sessions))[::-1]
        self._slot_freed = asyncio.Condition()
        self._reaper: asyncio.Task | None = None
        self._on_event = on_event or (lambda name: None)
        self._ephemeral = 0

    @property
    def in_use(self) -> int:
        """Slots taken (sessions, ones starting, and running /run_code calls)."""
        return self.config.max_sessions - len(self._free)

    def _retry_after(self) -> int:
        """Seconds until a slot is likely free: the soonest idle reaping, clamped to 1..60."""
        soonest = [s.idle_timeout_s - s.idle_for for s in self.sessions.values() if not s.busy]
        return int(min(60, max(1, min(soonest) + 1))) if soonest else 5

    def _take_slot(self) -> int:
        if not self._free:
            raise SessionCapReached(
                f"sandbox server is at its cap of {self.config.max_sessions} sessions (--max-sessions); "
                f"close sessions or retry later", self._retry_after())
        return self._free.pop()

    async def _give_slot(self, slot: int) -> None:
        self._free.append(slot)
        async with self._slot_freed:
            self._slot_freed.notify()

    async def create(self, idle_timeout_s: float | None = None) -> Session:
        """Start a new session; raises SessionCapReached at the cap."""
        slot = self._take_slot()
        idle = self.config.idle_timeout_s if idle_timeout_s is None else min(float(idle_timeout_s),
                                                                             self.config.max_idle_timeout_s)
        sid = "sb-" + secrets.token_hex(12)
        try:
            session = await Session.start(sid, slot, self.isolation, self.config.limits, idle)
        except BaseException:
            await self._give_slot(slot)
            raise
        self.sessions[sid] = session
        self._on_event("created")
        log.info("session %s started (slot %d, idle timeout %.0f s)", sid, slot, idle)
        return session

    def get(self, sid: str) -> Session:
        """The live session `sid`; raises SessionNotFound."""
        session = self.sessions.get(sid)
        if session is None or session.closed:  # a dead one is freed by the reaper
            raise SessionNotFound(sid)
        return session

    async def close(self, sid: str, reason: str = "closed") -> None:
        """End session `sid` and free its slot; raises SessionNotFound if unknown."""
        session = self.sessions.pop(sid, None)
        if session is None:
            raise SessionNotFound(sid)
        try:
            await session.close()
        finally:
            await self._give_slot(session.slot)
        self._on_event(reason)
        log.info("session %s %s", sid, reason)

    @contextlib.asynccontextmanager
    async def ephemeral(self, wait_s: float) -> AsyncIterator[Session]:
        """A fresh session for one stateless call (/run_code), waiting up to `wait_s` for a slot."""
        deadline = time.monotonic() + wait_s
        async with self._slot_freed:
            while not self._free:  # no await between this check and taking the slot below
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SessionCapReached(
                        f"sandbox server is at its cap of {self.config.max_sessions} sandboxes (--max-sessions) and "
                        f"none freed up within {wait_s:.0f} s", self._retry_after())
                try:
                    await asyncio.wait_for(self._slot_freed.wait(), left)
                except TimeoutError:
                    pass
            slot = self._take_slot()
        try:
            session = await Session.start("run_code-" + secrets.token_hex(6), slot, self.isolation,
                                          self.config.limits, 0)
        except BaseException:
            await self._give_slot(slot)
            raise
        self._ephemeral += 1
        try:
            yield session
        finally:
            self._ephemeral -= 1
            try:
                await session.close()
            finally:
                await self._give_slot(slot)

    async def reap_idle(self) -> int:
        """Close sessions idle past their timeout (and ones whose sandbox died); returns how many."""
        doomed = [(sid, "broken" if s.closed else "reaped") for sid, s in list(self.sessions.items())
                  if s.closed or (not s.busy and s.idle_for > s.idle_timeout_s)]
        for sid, reason in doomed:
            try:
                await self.close(sid, reason=reason)
            except SessionNotFound:
                pass
        return len(doomed)

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.reap_interval_s)
            try:
                await self.reap_idle()
            except Exception:
                log.exception("idle reaper failed")

    def start(self) -> None:
        """Start the idle reaper (call inside the running event loop)."""
        self._reaper = asyncio.get_running_loop().create_task(self._reap_loop())

    async def shutdown(self) -> None:
        """Stop reaping and close every session."""
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(self.close(sid, reason="closed at shutdown") for sid in list(self.sessions)),
                             return_exceptions=True)
