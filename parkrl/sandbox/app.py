"""The sandbox server's HTTP app (FastAPI): routes, bearer-token auth, errors, metrics.

Every route but GET /healthz needs `Authorization: Bearer <token>` (compared in constant time;
the token is never logged). Errors are JSON `{"detail": "<message>"}`.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import logging
import time
from typing import Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from .config import ServerConfig
from .isolation import Isolation
from .manager import SessionCapReached, SessionManager, SessionNotFound
from .metrics import SandboxMetrics
from .protocol import (
    CreateSessionRequest,
    CreateSessionResponse,
    ExecRequest,
    ExecResponse,
    HealthResponse,
    ReadFileResponse,
    RunCodeRequest,
    RunCodeResponse,
    WriteFileRequest,
    WriteFileResponse,
)
from .run_code import run_code
from .session import SessionError

log = logging.getLogger("parkrl.sandbox")

ERROR_STATUS = {"escape": 400, "invalid": 400, "isdir": 400, "missing": 404, "gone": 404, "too_big": 413,
                "nospace": 507, "broken": 500, "internal": 500}


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None):
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


EXEC_ROUTE = "/v1/sessions/{sid}/exec"


class _Observe:
    """ASGI middleware: request metrics, the body-size cap, the per-request insecurity warning, and
    the fast path of POST /v1/sessions/{sid}/exec (`fast_exec`, see create_app)."""

    def __init__(self, app: Any, metrics: SandboxMetrics, config: ServerConfig, insecure: bool,
                 fast_exec: Any = None):
        self.app, self.metrics, self.config, self.insecure = app, metrics, config, insecure
        self.fast_exec = fast_exec

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        if self.insecure and path not in ("/healthz", "/metrics"):
            log.warning("INSECURE: --insecure-no-isolation is on: %s %s runs without any isolation", method, path)
        length = dict(scope.get("headers") or []).get(b"content-length")
        status = [500]
        fast = False
        start = time.perf_counter()
        try:
            if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
                self.metrics.rejections.labels("body_too_large").inc()
                status[0] = 413
                resp = JSONResponse({"detail": f"request body of {int(length)} bytes exceeds the server's limit of "
                                               f"{self.config.max_body_bytes}"}, status_code=413)
                await resp(scope, receive, send)
                return

            async def send_observed(message: dict) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]
                await send(message)

            if (method == "POST" and self.fast_exec is not None and path.startswith("/v1/sessions/")
                    and path.endswith("/exec") and "/" not in path[13:-5] and len(path) > 18):
                body = bytearray()
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client is gone
                    body += message.get("body", b"")
                    if not message.get("more_body"):
                        break
                body = bytes(body)
                code = await self.fast_exec(scope, body, path[13:-5], send)
                if code is not None:
                    status[0] = code
                    fast = True
                    return
                replayed = False

                async def replay() -> dict:  # the app reads the body we took
                    nonlocal replayed
                    if not replayed:
                        replayed = True
                        return {"type": "http.request", "body": body, "more_body": False}
                    return await receive()

                await self.app(scope, replay, send_observed)
                return
            await self.app(scope, receive, send_observed)
        finally:
            route = scope.get("route")
            template = EXEC_ROUTE if fast else (getattr(route, "path", None) or "unmatched")
            self.metrics.requests.labels(template, method, str(status[0])).inc()
            self.metrics.latency.labels(template, method).observe(time.perf_counter() - start)


def create_app(config: ServerConfig, isolation: Isolation, manager: SessionManager | None = None) -> FastAPI:
    """The ASGI app of one sandbox server."""
    metrics = SandboxMetrics()
    manager = manager or SessionManager(isolation, config, on_event=lambda e: metrics.session_events.labels(e).inc())
    metrics.sessions_active.set_function(lambda: len(manager.sessions))
    metrics.slots_in_use.set_function(lambda: manager.in_use)
    token = config.token.encode() if config.token else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        manager.start()
        try:
            yield
        finally:
            await manager.shutdown()

    app = FastAPI(title="parkrl sandbox server", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.manager, app.state.metrics, app.state.config = manager, metrics, config

    async def authorized(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        if not token_ok(header):
            metrics.rejections.labels("auth").inc()
            raise ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)" if header
                           else "missing Authorization: Bearer <token> header", {"WWW-Authenticate": "Bearer"})

    def token_ok(header: str) -> bool:
        scheme, _, given = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token)

    def exec_metrics(r: Any) -> None:
        metrics.exec_seconds.observe(r.duration_s)
        outcome = "timeout" if r.timed_out else ("ok" if r.exit_code == 0 else "nonzero")
        metrics.exec_outcomes.labels(outcome).inc()
        if r.truncated:
            metrics.exec_outcomes.labels("truncated").inc()

    async def fast_exec(scope: dict, body: bytes, sid: str, send: Any) -> int | None:
        """POST /v1/sessions/{sid}/exec without FastAPI's routing, dependencies and models (the hot
        path; same answers). Returns the status sent, or None without sending anything when the
        request is not a well-formed authorized one: then the app answers it (401, 422, ...)."""
        if token is not None:
            header = b""
            for name, value in scope["headers"]:
                if name == b"authorization":
                    header = value
                    break
            if not token_ok(header.decode("latin-1")):
                return None
        try:
            req = json.loads(body)
        except ValueError:
            return None
        if type(req) is not dict or type(req.get("command")) is not str:
            return None
        t = req.get("timeout_s")
        if t is not None and (type(t) not in (int, float) or not t > 0):
            return None
        ok = False
        try:
            session = manager.get(sid)
            r = await session.exec(req["command"], min(t or config.default_timeout_s, config.max_timeout_s))
            if not (type(r.exit_code) in (int, type(None)) and type(r.stdout) is str and type(r.stderr) is str
                    and type(r.timed_out) is bool and type(r.truncated) is bool
                    and type(r.duration_s) in (int, float)):
                ExecResponse(**r.__dict__)  # raises the ValidationError the app would
                raise ValueError("malformed exec result")
            exec_metrics(r)
            code, payload, ok = 200, r.__dict__, True
        except SessionNotFound as e:
            code, payload = 404, {"detail": e.message}
        except SessionError as e:
            code, payload = ERROR_STATUS.get(e.kind, 500), {"detail": str(e)}
        except Exception as e:  # as the app's catch-all handler
            log.exception("unexpected error in POST %s", scope["path"])
            code, payload = 500, {"detail": f"internal error in {scope['path']}: {type(e).__name__}: {e}"}
        data = json.dumps(payload, ensure_ascii=not ok, separators=(",", ":")).encode()
        await send({"type": "http.response.start", "status": code,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(data))]})
        await send({"type": "http.response.body", "body": data})
        return code

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(SessionNotFound)
    async def _not_found(request: Request, exc: SessionNotFound) -> JSONResponse:
        return JSONResponse({"detail": exc.message}, status_code=404)

    @app.exception_handler(SessionCapReached)
    async def _cap(request: Request, exc: SessionCapReached) -> JSONResponse:
        metrics.rejections.labels("session_cap").inc()
        return JSONResponse({"detail": str(exc)}, status_code=429, headers={"Retry-After": str(exc.retry_after_s)})

    @app.exception_handler(SessionError)
    async def _session_error(request: Request, exc: SessionError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=ERROR_STATUS.get(exc.kind, 500))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors()]
        return JSONResponse({"detail": f"invalid request to {request.url.path}: " + "; ".join(parts)}, status_code=422)

    @app.get("/healthz")
    async def healthz() -> HealthResponse:
        return HealthResponse(sessions=len(manager.sessions), isolation=isolation.name)

    auth = [Depends(authorized)]

    @app.get("/metrics", dependencies=auth)
    async def metrics_route() -> Response:
        return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.post("/v1/sessions", status_code=201, dependencies=auth)
    async def create_session(body: CreateSessionRequest | None = None) -> CreateSessionResponse:
        session = await manager.create(body.idle_timeout_s if body else None)
        return CreateSessionResponse(session_id=session.sid)

    @app.post("/v1/sessions/{sid}/exec", dependencies=auth)
    async def exec_command(sid: str, body: ExecRequest) -> ExecResponse:
        session = manager.get(sid)
        timeout = min(body.timeout_s or config.default_timeout_s, config.max_timeout_s)
        r = await session.exec(body.command, timeout)
        exec_metrics(r)
        return ExecResponse(**r.__dict__)

    @app.put("/v1/sessions/{sid}/files", dependencies=auth)
    async def write_file(sid: str, body: WriteFileRequest) -> WriteFileResponse:
        session = manager.get(sid)
        try:
            data = base64.b64decode(body.content_b64, validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"sandbox session '{sid}': content_b64 for {body.path!r} is not valid base64") from None
        return WriteFileResponse(bytes=await session.write_file(body.path, data))

    @app.get("/v1/sessions/{sid}/files", dependencies=auth)
    async def read_file(sid: str, path: str = Query(...)) -> ReadFileResponse:
        session = manager.get(sid)
        data = await session.read_file(path)
        return ReadFileResponse(path=path, content_b64=base64.b64encode(data).decode())

    @app.delete("/v1/sessions/{sid}", status_code=204, dependencies=auth)
    async def delete_session(sid: str) -> Response:
        await manager.close(sid)
        return Response(status_code=204)

    @app.post("/run_code", dependencies=auth)
    async def run_code_route(body: RunCodeRequest) -> RunCodeResponse:
        return await run_code(body, manager, config)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error in {request.url.path}: {type(exc).__name__}: {exc}"},
                            status_code=500)

    app.add_middleware(_Observe, metrics=metrics, config=config, insecure=isolation.name == "none",
                       fast_exec=fast_exec)
    return app
