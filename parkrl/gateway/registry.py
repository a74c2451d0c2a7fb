"""The sandbox servers behind the gateway: their health, and which one takes a new session.

A background loop polls each server's GET /healthz every `interval_s`. A server is marked down
at once when nothing listens at its address (connection refused, also seen on a forwarded call),
and after `down_after` consecutive failed checks otherwise (timeouts, 5xx). It is marked up again
on the first good check - normally a restarted server, whose old sessions are gone. A server that
turns healthy is also asked for GET /metrics with the gateway's server token, so a token mismatch
shows up as "down: rejects the gateway's server token" instead of as 401s on every session call.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import httpx

log = logging.getLogger("parkrl.gateway")


@dataclass
class Server:
    """One sandbox server as the gateway sees it."""

    url: str
    index: int
    up: bool = False
    checked: bool = False             # at least one health check done
    reported_sessions: int = 0        # "sessions" from its last /healthz
    isolation: str | None = None
    last_error: str | None = "not checked yet"
    down_since: float | None = None   # wall clock (time.time()) when marked down
    failures: int = 0                 # consecutive failed checks
    back_up_at: float | None = None   # wall clock when it last came back after being down

    def describe(self) -> dict:
        """The server's entry in the gateway's /healthz."""
        return {"url": self.url, "up": self.up, "sessions": self.reported_sessions, "isolation": self.isolation,
                "error": None if self.up else self.last_error,
                "down_since": self.down_since if not self.up else None}


def normalise_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"server URL {url!r} must start with http:// or https://")
    return url


@dataclass
class ServerRegistry:
    """The fleet: health state per server and least-loaded choice among the healthy ones."""

    urls: Iterable[str]
    down_after: int = 2
    on_down: Callable[[Server], None] | None = None   # e.g. drop the server's sessions from the table
    servers: list[Server] = field(init=False)

    def __post_init__(self) -> None:
        urls = [normalise_url(u) for u in self.urls]
        if not urls:
            raise ValueError("no sandbox servers given (--servers URL[,URL...])")
        if len(set(urls)) != len(urls):
            raise ValueError("a sandbox server URL is listed twice")
        self.servers = [Server(u, i) for i, u in enumerate(urls)]
        self._by_url = {s.url: s for s in self.servers}

    def get(self, url: str) -> Server | None:
        return self._by_url.get(url)

    def healthy(self) -> list[Server]:
        return [s for s in self.servers if s.up]

    def by_load(self, load: Callable[[str], int]) -> list[Server]:
        """Healthy servers, fewest sessions first. A server's load is the larger of the gateway's
        own count (fresh) and what the server reported (covers sessions the gateway has not seen
        again since a restart); ties go to the lower index."""
        return sorted(self.healthy(), key=lambda s: (max(load(s.url), s.reported_sessions), s.index))

    def mark_down(self, server: Server, reason: str) -> None:
        if server.up or not server.checked:
            log.warning("sandbox server %s is DOWN: %s", server.url, reason)
            server.down_since = time.time()
            server.up = False
            server.checked = True
            server.last_error = reason
            server.reported_sessions = 0  # they are gone with it
            if self.on_down is not None:
                self.on_down(server)
        else:
            server.last_error = reason

    def mark_up(self, server: Server, health: dict) -> None:
        if not server.up and server.down_since is not None:
            log.warning("sandbox server %s is up again (down since %s)", server.url, time.ctime(server.down_since))
        elif not server.up:
            log.info("sandbox server %s is up", server.url)
        if server.down_since is not None:
            server.back_up_at = time.time()
        server.up = server.checked = True
        server.failures = 0
        server.last_error = None
        server.down_since = None
        sessions = health.get("sessions")
        server.reported_sessions = sessions if isinstance(sessions, int) else 0
        server.isolation = health.get("isolation")

    async def check(self, server: Server, client: httpx.AsyncClient, timeout_s: float,
                    auth_headers: dict[str, str]) -> None:
        """One health check of one server, updating its state."""
        try:
            r = await client.get(f"{server.url}/healthz", timeout=timeout_s)
            if r.status_code != 200:
                raise _CheckFailed(f"/healthz answered HTTP {r.status_code}")
            health = r.json()
            if not server.up:  # becoming healthy: make sure it takes our token before routing to it
                m = await client.get(f"{server.url}/metrics", timeout=timeout_s, headers=auth_headers)
                if m.status_code in (401, 403):
                    server.failures = self.down_after
                    self.mark_down(server, f"rejects the gateway's server token (HTTP {m.status_code} on /metrics); "
                                           "check --server-token-file")
                    return
            self.mark_up(server, health if isinstance(health, dict) else {})
        except httpx.ConnectError as e:
            server.failures += 1
            self.mark_down(server, f"connection refused or unreachable ({type(e).__name__}: {e})")
        except (httpx.HTTPError, _CheckFailed, ValueError) as e:
            server.failures += 1
            reason = f"health check failed {server.failures}x: " + (
                f"no answer within {timeout_s:g} s" if isinstance(e, httpx.TimeoutException)
                else f"{type(e).__name__}: {e}")
            if server.failures >= self.down_after or not server.checked:
                self.mark_down(server, reason)
            else:
                server.last_error = reason

    async def check_all(self, client: httpx.AsyncClient, timeout_s: float, auth_headers: dict[str, str]) -> None:
        await asyncio.gather(*(self.check(s, client, timeout_s, auth_headers) for s in self.servers))


class _CheckFailed(Exception):
    pass
