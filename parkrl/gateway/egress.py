"""The gateway's egress: `POST /v1/fetch` gets a URL for a run's tools, only from the hosts the
gateway was started with (`--egress-hosts`; none: no egress at all).

A URL is fetched when its scheme is http or https, it carries no credentials, and its host:port
(the scheme's default port when it names none) is on the list. Redirects are never followed: the
3xx comes back with its `location`, and a client that wants to follow it asks again, so every hop
is checked. The body is read up to `max_bytes` (the rest is dropped and `truncated` set), and the
whole fetch has one deadline.
"""
from __future__ import annotations

import asyncio
import base64
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}


class EgressRefused(ValueError):
    """The URL may not be fetched; the message says why (shown to the run)."""


def parse_host(entry: str) -> tuple[str, int | None]:
    """An --egress-hosts entry as (host, port): "wiki:8090", "127.0.0.1:8090", "[::1]:8090", or a bare
    "example.org" (its scheme's default port). Raises ValueError naming the entry."""
    text = entry.strip().lower()
    try:
        parts = urlsplit(f"http://{text}")
        host, port = parts.hostname, parts.port
    except ValueError as e:
        raise ValueError(f"--egress-hosts entry {entry!r}: {e}") from None
    if not host or parts.path or parts.query or parts.username or "/" in text:
        raise ValueError(f"--egress-hosts entry {entry!r}: write host:port, e.g. 127.0.0.1:8090")
    return host, port


@dataclass(frozen=True)
class EgressPolicy:
    """Which host:port pairs may be fetched."""

    hosts: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for entry in self.hosts:
            parse_host(entry)

    @property
    def listed(self) -> str:
        return ", ".join(self.hosts) if self.hosts else "none (the gateway was started without --egress-hosts)"

    def check(self, url: str) -> str:
        """The URL's host:port when it may be fetched; raises EgressRefused otherwise."""
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError as e:
            raise EgressRefused(f"{url!r} is not a valid URL ({e})") from None
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            raise EgressRefused(f"scheme {scheme or '(none)'!r} refused: only http and https URLs are fetched")
        host = parts.hostname or ""
        if not host:
            raise EgressRefused(f"{url!r} has no host")
        if parts.username is not None or parts.password is not None:
            raise EgressRefused("URLs with credentials (user@host) are refused")
        port = port if port is not None else DEFAULT_PORTS[scheme]
        shown = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        for entry in self.hosts:
            h, p = parse_host(entry)
            if h == host and (p == port or (p is None and port == DEFAULT_PORTS[scheme])):
                return shown
        raise EgressRefused(f"host {shown} is not on this run's egress list (allowed: {self.listed})")


@dataclass
class Fetched:
    status: int
    content_type: str
    location: str | None
    body: bytes
    truncated: bool

    def to_json(self, url: str) -> dict:
        return {"url": url, "status": self.status, "content_type": self.content_type, "location": self.location,
                "bytes": len(self.body), "truncated": self.truncated,
                "body_b64": base64.b64encode(self.body).decode()}


async def fetch(client: httpx.AsyncClient, url: str, max_bytes: int, timeout_s: float) -> Fetched:
    """GET `url` without following redirects, keeping at most `max_bytes` of the body, all within
    `timeout_s` (raises TimeoutError, or httpx's errors for a failed connection)."""
    async with asyncio.timeout(timeout_s):
        async with client.stream("GET", url, follow_redirects=False) as r:
            chunks, size, truncated = [], 0, False
            async for chunk in r.aiter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    truncated = True
                    break
            body = b"".join(chunks)[:max_bytes]
            return Fetched(r.status_code, r.headers.get("content-type", ""), r.headers.get("location"), body,
                           truncated)
