"""The gateway's HTTP app: authenticate, admit, route, forward with a deadline, translate failures.

Every error is JSON {"detail": ...} naming the session (as the run knows it) and, when a server
is at fault, the server's URL. Server answers pass through unchanged except that the server's
session id is replaced by the gateway's, and a server's 401/403 (the gateway's server token is
wrong) becomes 502, so the trainer never mistakes it for its own token being refused.

Failure answers on a session call: its server marked down -> 503 "session ... is lost: its server
at URL is gone" without a call; connection refused mid-call -> the server is marked down at once and
the call answers 502 with the same message; no answer by the deadline -> 504; a connection that
broke mid-call to a server that still answers health checks -> 502 "may or may not have taken
effect". A server that comes back is asked again; if it restarted, its 404 gets a note saying so.

`POST /v1/fetch` is the runs' egress (parkrl.gateway.egress): only hosts on --egress-hosts, logged.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote, urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from parkrl.gateway.admission import Admission
from parkrl.gateway.auth import INSECURE_RUN_ID, AuthConfigError, RunTokens
from parkrl.gateway.config import GatewayConfig
from parkrl.gateway.egress import EgressPolicy, EgressRefused, fetch
from parkrl.gateway.metrics import CONTENT_TYPE, GatewayMetrics, route_label
from parkrl.gateway.registry import Server, ServerRegistry
from parkrl.gateway.session_ids import SessionIdCodec, SessionRef
from parkrl.sandbox.http11 import Http11Pool, Http11Response
from parkrl.sandbox.protocol import SESSION_NOT_FOUND

log = logging.getLogger("parkrl.gateway")

_PASS_HEADERS = ("content-type", "retry-after")


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _shown(session_id: str) -> str:
    """A client-supplied id as it may appear in a message (bounded)."""
    return session_id if len(session_id) <= 200 else session_id[:200] + "..."


def _retry_after(r: httpx.Response | Http11Response) -> int:
    """A server's Retry-After in whole seconds (>= 1; 1 when missing or unreadable)."""
    try:
        return max(1, int(float(r.headers.get("retry-after", "1"))))
    except ValueError:
        return 1


def _printable(text: str, limit: int) -> str:
    """Client-supplied text as it may appear in a log line or a message: bounded, no control characters."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text[:limit])
    return shown + ("..." if len(text) > limit else "")


def _not_found(session_id: str) -> JSONResponse:
    return _error(404, SESSION_NOT_FOUND.format(sid=_shown(session_id)))


class Gateway:
    """The gateway's state: fleet, session table, metrics, secrets and the upstream HTTP pool."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.tokens = config.run_tokens
        self.codec = SessionIdCodec(config.secret)
        self.admission = Admission(config.max_sessions_per_run, config.max_sessions, config.default_idle_timeout_s,
                                   retry_after_s=config.retry_after_s)
        self.registry = ServerRegistry(config.servers, down_after=config.down_after, on_down=self._server_down)
        self.metrics = GatewayMetrics(
            lambda: (self.admission.total(),
                     {s.url: self.admission.for_server(s.url) for s in self.registry.servers},
                     self.admission.runs()),
            lambda: [(s.url, s.up) for s in self.registry.servers])
        self.server_headers = {"Authorization": f"Bearer {config.server_token}"} if config.server_token else {}
        self.client: httpx.AsyncClient | None = None  # health checks, and servers at https:// URLs
        self.upstream: Http11Pool | None = None     # every other call to an http:// server
        self._tokens_mtime = self._mtime()
        self._loop_task: asyncio.Task | None = None
        self.egress = EgressPolicy(tuple(config.egress_hosts))
        self.fetcher: httpx.AsyncClient | None = None  # POST /v1/fetch (never follows redirects)

    # ---- lifecycle
    async def start(self) -> None:
        self.client = httpx.AsyncClient(
            headers=self.server_headers, trust_env=False, timeout=self.config.call_timeout_s,
            limits=httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30))
        self.upstream = Http11Pool(self.server_headers, max_connections=512, max_idle=128)
        self.fetcher = httpx.AsyncClient(trust_env=False, follow_redirects=False, timeout=self.config.fetch_timeout_s,
                                         headers={"user-agent": "parkrl-gateway"},
                                         limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        await self.registry.check_all(self.client, self.config.health_timeout_s, self.server_headers)
        up = [s.url for s in self.registry.healthy()]
        log.info("gateway up: %d/%d sandbox servers healthy %s", len(up), len(self.registry.servers), up)
        self._loop_task = asyncio.create_task(self._health_loop(), name="gateway-health")

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
        if self.client is not None:
            await self.client.aclose()
        if self.upstream is not None:
            await self.upstream.aclose()
        if self.fetcher is not None:
            await self.fetcher.aclose()

    async def _health_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.health_interval_s)
            try:
                await self.registry.check_all(self.client, self.config.health_timeout_s, self.server_headers)
                self.admission.prune_idle()
                self._maybe_reload_tokens()
            except Exception:  # the loop must survive anything
                log.exception("health loop iteration failed")

    def _mtime(self) -> float | None:
        try:
            return os.stat(self.config.tokens_file).st_mtime if self.config.tokens_file else None
        except OSError:
            return None

    def _maybe_reload_tokens(self) -> None:
        mtime = self._mtime()
        if mtime is None or mtime == self._tokens_mtime or self.tokens is None:
            return
        self._tokens_mtime = mtime
        try:
            self.tokens = RunTokens.from_file(self.config.tokens_file)
            log.warning("tokens file %s re-read: %d runs", self.config.tokens_file, len(self.tokens))
        except AuthConfigError as e:
            log.error("tokens file changed but is invalid, keeping the previous tokens: %s", e)

    def _server_down(self, server: Server) -> None:
        n = self.admission.drop_server(server.url)
        if n:
            log.warning("%d sandbox sessions on %s are lost", n, server.url)

    # ---- helpers
    async def _call(self, method: str, server: Server, path: str, body: bytes | None,
                    timeout: float) -> httpx.Response | Http11Response:
        """One call to a server (`path` with any query string); raises httpx's exceptions."""
        if self.upstream is not None and Http11Pool.supports(server.url):
            return await self.upstream.request(method, server.url, path, content=body,
                                               content_type="application/json" if body else None, timeout=timeout)
        return await self.client.request(method, server.url + path, content=body,
                                         headers={"content-type": "application/json"} if body else None,
                                         timeout=timeout)

    def authenticate(self, request: Request) -> str | None:
        """The run id of the request's bearer token (None: answer 401)."""
        if self.tokens is None:
            return INSECURE_RUN_ID
        return self.tokens.run_for(request.headers.get("authorization"))

    def unauthorized(self) -> JSONResponse:
        self.metrics.reject("unauthorized")
        return _error(401, "missing or invalid bearer token (Authorization: Bearer <run token>)",
                      {"WWW-Authenticate": "Bearer"})

    def _lost(self, session_id: str, server: Server, status: int = 503) -> JSONResponse:
        since = f" since {time.strftime('%H:%M:%S', time.localtime(server.down_since))}" if server.down_since else ""
        return _error(status, f"sandbox session '{_shown(session_id)}' is lost: its server at {server.url} is gone "
                              f"(down{since}: {server.last_error}); create a new session")

    def _passthrough(self, r: httpx.Response | Http11Response, server: Server, ref: SessionRef | None = None,
                     session_id: str | None = None) -> Response:
        if r.status_code in (401, 403):
            self.metrics.upstream_errors.labels(server.url, "auth").inc()
            return _error(502, f"sandbox server at {server.url} refused the gateway's server token "
                               f"(HTTP {r.status_code}); the gateway is misconfigured (--server-token-file)")
        headers = {k: r.headers[k] for k in _PASS_HEADERS if k in r.headers}
        body = r.content
        if r.status_code >= 400 and ref is not None and session_id is not None:
            try:
                data = r.json()
                if isinstance(data, dict) and isinstance(data.get("detail"), str):
                    detail = data["detail"]
                    if len(ref.server_sid) >= 8:  # name the session as the run knows it
                        detail = detail.replace(ref.server_sid, _shown(session_id))
                    if r.status_code == 404 and server.back_up_at is not None:
                        detail += (f" (its server at {server.url} was down until "
                                   f"{time.strftime('%H:%M:%S', time.localtime(server.back_up_at))} "
                                   "and lost its sessions if it restarted)")
                    data["detail"] = detail
                    body = json.dumps(data).encode()
            except ValueError:
                pass
        if r.status_code == 204:
            return Response(status_code=204, headers={k: v for k, v in headers.items() if k != "content-type"})
        return Response(content=body, status_code=r.status_code, headers=headers)

    async def _broken(self, server: Server, e: Exception) -> bool:
        """After a transport failure mid-call: is the server gone? (marks it down if so)."""
        if isinstance(e, httpx.ConnectError):
            self.registry.mark_down(server, f"connection refused ({e})")
            return True
        try:
            await self.client.get(f"{server.url}/healthz", timeout=min(1.0, self.config.health_timeout_s))
            return False
        except httpx.ConnectError as e2:
            self.registry.mark_down(server, f"connection refused after a broken call ({e2})")
            return True
        except httpx.HTTPError:
            return False

    async def read_body(self, request: Request) -> bytes | JSONResponse:
        """The request body, or 413 once it is over --max-body-mb (declared or streamed)."""
        limit = self.config.max_body_bytes
        too_big = _error(413, f"request body over the gateway's limit of {limit} bytes")
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                return too_big
            chunks.append(chunk)
        return b"".join(chunks)

    # ---- routes
    async def create_session(self, request: Request) -> Response:
        run = self.authenticate(request)
        if run is None:
            return self.unauthorized()
        body = await self.read_body(request)
        if isinstance(body, Response):
            return body
        idle: Any = None
        if body:
            try:
                parsed = json.loads(body)
                idle = parsed.get("idle_timeout_s") if isinstance(parsed, dict) else None
            except ValueError:
                return _error(400, "the body of POST /v1/sessions must be a JSON object")
        idle = float(idle) if isinstance(idle, (int, float)) and idle > 0 else None
        rejected = self.admission.reserve(run)
        if rejected is not None:
            self.metrics.reject(rejected.reason)
            return _error(429, rejected.detail, {"Retry-After": str(rejected.retry_after_s)})
        committed = False
        try:
            candidates = self.registry.by_load(self.admission.for_server)
            busy: list[int] = []
            failed: list[str] = []
            for server in candidates:
                self.admission.placing(server.url, +1)
                placed = False
                try:
                    r = await self._call("POST", server, "/v1/sessions", body or b"{}", self.config.call_timeout_s)
                except httpx.TimeoutException:
                    self.metrics.upstream_errors.labels(server.url, "timeout").inc()
                    return _error(504, f"creating a sandbox session: the server at {server.url} did not answer "
                                       f"within {self.config.call_timeout_s:g} s")
                except httpx.HTTPError as e:
                    kind = "connect" if isinstance(e, httpx.ConnectError) else "broken"
                    self.metrics.upstream_errors.labels(server.url, kind).inc()
                    if isinstance(e, httpx.ConnectError):
                        self.registry.mark_down(server, f"connection refused ({e})")
                    failed.append(f"{server.url}: {type(e).__name__}")
                    continue
                else:
                    if r.status_code == 201:
                        try:
                            data = r.json()
                            server_sid = data["session_id"] if isinstance(data, dict) else None
                        except (ValueError, KeyError):
                            server_sid = None
                        if not isinstance(server_sid, str) or not server_sid or "\n" in server_sid:
                            failed.append(f"{server.url}: malformed answer to POST /v1/sessions")
                            continue
                        session_id = self.codec.encode(run, server.url, server_sid)
                        self.admission.commit(session_id, run, server.url, idle)
                        committed = placed = True
                        data["session_id"] = session_id
                        return JSONResponse(data, status_code=201)
                    if r.status_code == 429:
                        busy.append(_retry_after(r))
                        continue
                    if r.status_code >= 500:  # e.g. its sandbox did not start: another server may do better
                        self.metrics.upstream_errors.labels(server.url, "error").inc()
                        failed.append(f"{server.url}: HTTP {r.status_code} {r.text[:300]}")
                        continue
                    return self._passthrough(r, server)
                finally:
                    if not placed:
                        self.admission.placing(server.url, -1)
            if busy:
                self.metrics.reject("fleet_full")
                return _error(429, f"all {len(candidates)} healthy sandbox servers are full "
                                   f"({len(busy)} answered 429{'; ' + '; '.join(failed) if failed else ''})",
                              {"Retry-After": str(min(busy))})
            self.metrics.reject("no_server")
            tried = {s.url for s in candidates}
            reasons = failed + [f"{s.url}: down ({s.last_error})" for s in self.registry.servers
                                if not s.up and s.url not in tried]
            return _error(503, f"no healthy sandbox server can take a new session ({'; '.join(reasons)})",
                          {"Retry-After": str(max(1, int(self.config.health_interval_s)))})
        finally:
            if not committed:
                self.admission.release(run)

    async def session_call(self, request: Request, session_id: str, method: str, suffix: str) -> Response:
        """Forwards one call on an existing session to its server."""
        run = self.authenticate(request)
        if run is None:
            return self.unauthorized()
        where = self._locate(run, session_id)
        if isinstance(where, Response):
            return where
        body = await self.read_body(request) if method in ("POST", "PUT") else None
        if isinstance(body, Response):
            return body
        query = urlencode(request.query_params.multi_items()) if request.scope.get("query_string") else ""
        return await self._forward(run, where[0], where[1], session_id, method, suffix, body, query)

    async def fast_exec(self, scope: dict, receive: Any, send: Any, session_id: str) -> None:
        """POST /v1/sessions/{session_id}/exec (no query string) straight from ASGI: what session_call
        does, without FastAPI's routing and request objects (the hot path)."""
        authorization = declared = None
        for name, value in scope["headers"]:  # the first of each, as Starlette's headers.get
            if name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
            elif name == b"content-length" and declared is None:
                declared = value.decode("latin-1")
        run = INSECURE_RUN_ID if self.tokens is None else self.tokens.run_for(authorization)
        if run is None:
            resp = self.unauthorized()
        else:
            where = self._locate(run, session_id)
            if isinstance(where, Response):
                resp = where
            else:
                limit = self.config.max_body_bytes
                if declared is not None and declared.isdigit() and int(declared) > limit:
                    resp = _error(413, f"request body over the gateway's limit of {limit} bytes")
                else:
                    chunks, size = [], 0
                    while True:
                        message = await receive()
                        if message["type"] != "http.request":
                            return  # the client is gone
                        chunk = message.get("body", b"")
                        size += len(chunk)
                        if size > limit:
                            resp = _error(413, f"request body over the gateway's limit of {limit} bytes")
                            break
                        chunks.append(chunk)
                        if not message.get("more_body"):
                            resp = await self._forward(run, where[0], where[1], session_id, "POST", "/exec",
                                                       b"".join(chunks), "")
                            break
        await resp(scope, receive, send)

    def _locate(self, run: str, session_id: str) -> tuple[SessionRef, Server] | Response:
        """The session's server-side id and server, or the answer saying why there is none."""
        ref = self.codec.decode(run, session_id)
        if ref is None:
            return _not_found(session_id)
        server = self.registry.get(ref.server_url)
        if server is None:
            return _error(404, f"sandbox session '{_shown(session_id)}' not found: its server {ref.server_url} is "
                               "no longer behind this gateway")
        if not server.up:
            return self._lost(session_id, server)
        return ref, server

    async def _forward(self, run: str, ref: SessionRef, server: Server, session_id: str, method: str, suffix: str,
                       body: bytes | None, query: str) -> Response:
        timeout_s = self._exec_deadline(body) if suffix == "/exec" and body else self.config.call_timeout_s
        self.admission.touch(session_id, run, server.url)
        path = f"/v1/sessions/{quote(ref.server_sid, safe='')}{suffix}"
        if query:
            path += "?" + query
        try:
            r = await self._call(method, server, path, body, timeout_s)
        except httpx.TimeoutException:
            self.metrics.upstream_errors.labels(server.url, "timeout").inc()
            return _error(504, f"sandbox session '{_shown(session_id)}': the server at {server.url} did not answer "
                               f"{method} {suffix or '/'} within {timeout_s:g} s")
        except httpx.HTTPError as e:
            gone = await self._broken(server, e)
            self.metrics.upstream_errors.labels(server.url, "connect" if gone else "broken").inc()
            if gone:
                return self._lost(session_id, server, 502)
            return _error(502, f"sandbox session '{_shown(session_id)}': the connection to its server at {server.url} "
                               f"broke during {method} {suffix or '/'} ({type(e).__name__}); the call may or may "
                               "not have taken effect")
        if r.status_code == 404 or (method == "DELETE" and r.status_code < 300):
            self.admission.drop(session_id)
        return self._passthrough(r, server, ref, session_id)

    def _exec_deadline(self, body: bytes) -> float:
        try:
            t = json.loads(body).get("timeout_s")
        except (ValueError, AttributeError):
            t = None
        t = float(t) if isinstance(t, (int, float)) and t > 0 else self.config.default_exec_timeout_s
        return min(t, self.config.max_exec_timeout_s) + self.config.exec_margin_s

    async def _json_call(self, request: Request, route: str) -> tuple[str, bytes, dict[str, Any]] | Response:
        """(run, raw body, parsed body) of an authenticated POST `route` whose body is a JSON
        object, or the error answer to send."""
        run = self.authenticate(request)
        if run is None:
            return self.unauthorized()
        body = await self.read_body(request)
        if isinstance(body, Response):
            return body
        try:
            parsed = json.loads(body)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            return _error(400, f"the body of POST {route} must be a JSON object")
        return run, body, parsed

    async def run_code(self, request: Request) -> Response:
        """SandboxFusion /run_code on the least-loaded healthy server (stateless; busy/dead: next one)."""
        got = await self._json_call(request, "/run_code")
        if isinstance(got, Response):
            return got
        _, body, parsed = got
        run_timeout = parsed.get("run_timeout")
        run_timeout = float(run_timeout) if isinstance(run_timeout, (int, float)) and run_timeout > 0 else 10.0
        # the server may first wait for a free slot and start a sandbox: allow a call deadline for that
        timeout_s = (min(run_timeout, self.config.max_exec_timeout_s) + self.config.exec_margin_s
                     + self.config.call_timeout_s)
        busy: list[int] = []
        failed: list[str] = []
        candidates = self.registry.by_load(self.admission.for_server)
        for server in candidates:
            try:
                r = await self._call("POST", server, "/run_code", body, timeout_s)
            except httpx.TimeoutException:
                self.metrics.upstream_errors.labels(server.url, "timeout").inc()
                return _error(504, f"/run_code: the server at {server.url} did not answer within {timeout_s:g} s")
            except httpx.HTTPError as e:
                self.metrics.upstream_errors.labels(server.url, "connect").inc()
                if isinstance(e, httpx.ConnectError):
                    self.registry.mark_down(server, f"connection refused ({e})")
                    failed.append(f"{server.url}: connection refused")
                    continue
                return _error(502, f"/run_code: the connection to the server at {server.url} broke "
                                   f"({type(e).__name__})")
            if r.status_code == 429:
                busy.append(_retry_after(r))
                continue
            return self._passthrough(r, server)
        if busy:
            self.metrics.reject("fleet_full")
            return _error(429, f"/run_code: all {len(candidates)} healthy sandbox servers are busy",
                          {"Retry-After": str(min(busy))})
        self.metrics.reject("no_server")
        return _error(503, "/run_code: no healthy sandbox server" + (f" ({'; '.join(failed)})" if failed else ""),
                      {"Retry-After": str(max(1, int(self.config.health_interval_s)))})

    async def fetch(self, request: Request) -> Response:
        """POST /v1/fetch {"url", "session"?, "max_bytes"?, "timeout_s"?}: GET a URL on the egress list
        (parkrl.gateway.egress); every fetch, refused or not, is logged with its run and session."""
        got = await self._json_call(request, "/v1/fetch")
        if isinstance(got, Response):
            return got
        run, _, parsed = got
        if not isinstance(parsed.get("url"), str):
            return _error(400, 'the body of POST /v1/fetch must be a JSON object with a "url" string')
        url, session = parsed["url"], _printable(str(parsed.get("session") or "-"), 200)
        max_bytes, timeout_s = parsed.get("max_bytes"), parsed.get("timeout_s")
        cap_b, cap_t = self.config.fetch_max_bytes, self.config.fetch_timeout_s
        max_bytes = min(int(max_bytes), cap_b) if isinstance(max_bytes, int) and max_bytes > 0 else cap_b
        timeout_s = min(float(timeout_s), cap_t) if isinstance(timeout_s, (int, float)) and timeout_s > 0 else cap_t
        shown = _printable(url, 500)
        try:
            self.egress.check(url)
        except EgressRefused as e:
            self.metrics.fetches.labels("refused").inc()
            log.warning("egress REFUSED run=%s session=%s url=%s: %s", run, session, shown, e)
            return _error(403, f"fetching {shown}: {e}")
        t0 = time.perf_counter()
        try:
            got = await fetch(self.fetcher, url, max_bytes, timeout_s)
        except TimeoutError:
            self.metrics.fetches.labels("timeout").inc()
            log.warning("egress run=%s session=%s url=%s: timed out after %g s", run, session, shown, timeout_s)
            return _error(504, f"fetching {shown}: no complete answer within {timeout_s:g} s")
        except httpx.HTTPError as e:
            self.metrics.fetches.labels("error").inc()
            what = "connection failed" if isinstance(e, httpx.ConnectError) else "the connection broke"
            log.warning("egress run=%s session=%s url=%s: %s (%s)", run, session, shown, what, type(e).__name__)
            return _error(502, f"fetching {shown}: {what} ({type(e).__name__}: {_printable(str(e), 200)})")
        self.metrics.fetches.labels("ok").inc()
        self.metrics.fetch_bytes.inc(len(got.body))
        log.info("egress run=%s session=%s url=%s status=%d bytes=%d%s in %.3f s", run, session, shown, got.status,
                 len(got.body), " (truncated)" if got.truncated else "", time.perf_counter() - t0)
        return JSONResponse(got.to_json(url))

    def health(self) -> dict:
        servers = [s.describe() for s in self.registry.servers]
        up = sum(s["up"] for s in servers)
        return {"status": "ok" if up == len(servers) else ("degraded" if up else "down"),
                "servers_up": up, "servers": servers, "sessions": self.admission.total(),
                "auth": "tokens" if self.tokens is not None else "DISABLED (--insecure-no-auth)",
                "session_ids": "persistent" if self.config.secret_persistent else "ephemeral (random secret)",
                "egress_hosts": list(self.config.egress_hosts)}


EXEC_ROUTE = "/v1/sessions/{sid}/exec"


class _Metered:
    """ASGI wrapper recording every HTTP request's route, status and latency; it sends POST
    /v1/sessions/{sid}/exec without a query string to `Gateway.fast_exec` (the hot path)."""

    def __init__(self, app: Any, metrics: GatewayMetrics, gateway: Gateway | None = None) -> None:
        self.app = app
        self.metrics = metrics
        self.gateway = gateway

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        path = scope["path"]
        fast = (self.gateway is not None and scope["method"] == "POST" and path.startswith("/v1/sessions/")
                and path.endswith("/exec") and len(path) > 18 and "/" not in path[13:-5]
                and not scope.get("query_string"))
        try:
            if fast:
                await self.gateway.fast_exec(scope, receive, send_wrapper, path[13:-5])
            else:
                await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(EXEC_ROUTE if fast else route_label(path), scope["method"], status,
                                 time.perf_counter() - t0)


def create_app(config: GatewayConfig) -> FastAPI:
    """The gateway as an ASGI app (serve it with uvicorn, one process: its state is in memory)."""
    gw = Gateway(config)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await gw.start()
        on_started = getattr(app.state, "on_started", None)
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            await gw.stop()

    app = FastAPI(title="parkrl sandbox gateway", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.gateway = gw

    @app.post("/v1/sessions")
    async def create_session(request: Request) -> Response:
        return await gw.create_session(request)

    @app.post("/v1/sessions/{session_id}/exec")
    async def exec_(request: Request, session_id: str) -> Response:
        return await gw.session_call(request, session_id, "POST", "/exec")

    @app.put("/v1/sessions/{session_id}/files")
    async def write_file(request: Request, session_id: str) -> Response:
        return await gw.session_call(request, session_id, "PUT", "/files")

    @app.get("/v1/sessions/{session_id}/files")
    async def read_file(request: Request, session_id: str) -> Response:
        return await gw.session_call(request, session_id, "GET", "/files")

    @app.post("/v1/sessions/{session_id}/step")  # an environment server's episode (parkrl.envs.server)
    async def env_step(request: Request, session_id: str) -> Response:
        return await gw.session_call(request, session_id, "POST", "/step")

    @app.delete("/v1/sessions/{session_id}")
    async def close_session(request: Request, session_id: str) -> Response:
        return await gw.session_call(request, session_id, "DELETE", "")

    @app.post("/run_code")
    async def run_code(request: Request) -> Response:
        return await gw.run_code(request)

    @app.post("/v1/fetch")
    async def fetch_(request: Request) -> Response:
        return await gw.fetch(request)

    @app.get("/healthz")
    async def healthz() -> dict:
        return gw.health()

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        if gw.authenticate(request) is None:
            return gw.unauthorized()
        return Response(gw.metrics.render(), media_type=CONTENT_TYPE)

    app.add_middleware(_MeteredMiddleware, metrics=gw.metrics, gateway=gw)
    return app


class _MeteredMiddleware(_Metered):
    """`_Metered` in the shape `FastAPI.add_middleware` expects."""
