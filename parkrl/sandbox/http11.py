"""A small keep-alive HTTP/1.1 client (plain http:// only), for the gateway's calls to the sandbox
servers and for AsyncSandboxClient.

httpx spends most of a busy caller's CPU in its connection pool: for every request it rescans
every connection (with a poll() each), so its cost per request grows with the calls in flight
(at 64 concurrent sessions it cost the gateway ~3 ms of CPU per exec). This client does the one
thing needed here: a request on a keep-alive connection, the whole answer read into memory. Per
origin it keeps a LIFO stack of idle connections and caps the open ones (extra calls wait for
one). A connection idle longer than `keepalive_s` (below uvicorn's 5 s keep-alive) or closed by
the server is dropped, never reused. A call's `timeout` bounds the whole call.

Failures raise httpx's exception types, so callers handle both clients alike: httpx.ConnectError
(nothing listens), httpx.TimeoutException (no answer in time), httpx.RemoteProtocolError /
httpx.ReadError (the connection broke or the answer was malformed). Stdlib and httpx only.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from collections import deque
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

MAX_HEAD = 64 * 1024          # status line and headers
MAX_CHUNK_LINE = 1024
_TARGET = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/%?]*")  # what may go into a request line unquoted


class Http11Response:
    """A server's answer: status, headers (lower-case names; a repeated one keeps its last value), body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers: dict[str, str], content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class _Origin:
    """One base URL: where to connect, what goes into every request's head, its connections."""

    def __init__(self, base_url: str, default_headers: dict[str, str], max_connections: int):
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"not a plain http:// URL: {base_url!r}")
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = quote(parts.path.rstrip("/"), safe="-._~!$&'()*+,;=:@/%")
        host_header = parts.netloc.rpartition("@")[2]
        lines = [f"Host: {host_header}"] + [f"{k}: {v}" for k, v in default_headers.items()]
        for line in lines:
            if "\r" in line or "\n" in line:
                raise ValueError("header values must not contain line breaks")
        self.head_tail = ("\r\n".join(lines) + "\r\n").encode("latin-1")
        self.idle: deque[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = deque()  # newest last
        self.slots = asyncio.Semaphore(max_connections)


class Http11Pool:
    """Keep-alive connections to http:// origins; `request` is the only call."""

    def __init__(self, default_headers: dict[str, str] | None = None, max_connections: int = 512,
                 max_idle: int = 128, keepalive_s: float = 4.0):
        self.default_headers = dict(default_headers or {})
        self.max_connections, self.max_idle, self.keepalive_s = max_connections, max_idle, keepalive_s
        self._origins: dict[str, _Origin] = {}

    @staticmethod
    def supports(base_url: str) -> bool:
        return base_url.startswith("http://")

    def _origin(self, base_url: str) -> _Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            origin = self._origins[base_url] = _Origin(base_url, self.default_headers, self.max_connections)
        return origin

    async def request(self, method: str, base_url: str, path: str, *, content: bytes | None = None,
                      content_type: str | None = None, timeout: float) -> Http11Response:
        """`method` `base_url` + `path` (path includes any query string, already encoded)."""
        origin = self._origin(base_url)
        if not _TARGET.fullmatch(path):
            path = quote(path, safe="-._~!$&'()*+,;=:@/%?")
        head = [f"{method} {origin.prefix}{path} HTTP/1.1\r\n".encode("latin-1"), origin.head_tail]
        if content is not None:
            if content_type:
                head.append(f"Content-Type: {content_type}\r\n".encode("latin-1"))
            head.append(b"Content-Length: %d\r\n" % len(content))
        elif method in ("POST", "PUT", "PATCH"):
            head.append(b"Content-Length: 0\r\n")
        head.append(b"\r\n")
        if content:
            head.append(content)
        data = b"".join(head)
        try:
            async with asyncio.timeout(timeout):
                async with origin.slots:
                    conn = await self._connection(origin)
                    reader, writer = conn
                    ok = False
                    try:
                        writer.write(data)
                        resp, keep = await self._read_response(reader, method)
                        ok = True
                    finally:
                        if ok and keep and len(origin.idle) < self.max_idle:
                            now = time.monotonic()
                            idle = origin.idle
                            while idle and now - idle[0][2] >= self.keepalive_s:  # expired, unused since
                                idle.popleft()[1].close()
                            idle.append((reader, writer, now))
                        else:
                            writer.close()
                    return resp
        except TimeoutError:
            raise httpx.ReadTimeout(f"no answer from {base_url} within {timeout:g} s") from None

    async def _connection(self, origin: _Origin) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while origin.idle:
            reader, writer, since = origin.idle.pop()
            if now - since < self.keepalive_s and not reader.at_eof() and not writer.is_closing():
                return reader, writer
            writer.close()
        try:
            reader, writer = await asyncio.open_connection(origin.host, origin.port, limit=MAX_HEAD)
        except OSError as e:
            raise httpx.ConnectError(f"cannot connect to {origin.host}:{origin.port}: {e}") from None
        return reader, writer

    @staticmethod
    async def _read_response(reader: asyncio.StreamReader, method: str) -> tuple[Http11Response, bool]:
        """The answer and whether the connection may carry another request."""
        try:
            while True:
                raw = await reader.readuntil(b"\r\n\r\n")
                lines = raw.decode("latin-1").split("\r\n")
                version, _, rest = lines[0].partition(" ")
                status = int(rest[:3])
                if not version.startswith("HTTP/1.") or not 100 <= status <= 599:
                    raise ValueError(f"bad status line {lines[0][:100]!r}")
                if status >= 200 or status == 101:
                    break  # 1xx (other than 101) come before the real answer
            headers: dict[str, str] = {}
            for line in lines[1:]:
                if line:
                    name, sep, value = line.partition(":")
                    if not sep:
                        raise ValueError(f"bad header line {line[:100]!r}")
                    headers[name.strip().lower()] = value.strip()
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            if method == "HEAD" or status in (204, 304) or status < 200:
                body = b""
            elif "chunked" in headers.get("transfer-encoding", "").lower():
                parts = []
                while True:
                    size_line = await reader.readuntil(b"\r\n")
                    if len(size_line) > MAX_CHUNK_LINE:
                        raise ValueError("chunk size line too long")
                    size = int(size_line.split(b";", 1)[0].strip(), 16)
                    if size == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                            pass
                        break
                    parts.append(await reader.readexactly(size))
                    if await reader.readexactly(2) != b"\r\n":
                        raise ValueError("chunk not followed by CRLF")
                body = b"".join(parts)
            elif "content-length" in headers:
                body = await reader.readexactly(int(headers["content-length"]))
            else:
                body = await reader.read()  # until the server closes
                keep = False
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, IndexError) as e:
            raise httpx.RemoteProtocolError(f"broken or malformed answer ({type(e).__name__}: {e})") from None
        except OSError as e:
            raise httpx.ReadError(f"connection broke ({type(e).__name__}: {e})") from None
        return Http11Response(status, headers, body), keep

    async def aclose(self) -> None:
        for origin in self._origins.values():
            while origin.idle:
                origin.idle.pop()[1].close()
