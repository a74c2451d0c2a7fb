"""The environment server's HTTP app (FastAPI): one `Environment` per session (an episode).

    POST   /v1/sessions            {"env": "pkg.mod.Class", "args": {...}, "sample": {...}}
                                   -> 201 {"session_id", "observation": [messages], "stop": [...],
                                           "uses_sandbox"}          the instance's reset(sample)
                                   ("sample": null builds the instance without reset: a check)
    POST   /v1/sessions/{id}/step  {"text": "..."} -> {"observation", "reward", "done", "info"}
    DELETE /v1/sessions/{id}       -> 204, the instance's close()
    GET    /healthz                no auth: {"ok", "sessions", "isolation": "none"}
    GET    /metrics                Prometheus text

Every route but /healthz needs `Authorization: Bearer <token>` unless the server was started with
--insecure-no-auth. Errors are JSON {"detail"}: 400 a class it cannot import or build (named),
401 the token, 404 an unknown session, 429 full (Retry-After), 500 "Class.reset/step raised
...": the episode is over and its instance closed. Environment code runs in worker threads, one
call at a time per session; a session idle for --idle-timeout-s is closed.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.concurrency import run_in_threadpool

from parkrl.envs.base import Environment, StepResult
from parkrl.plugins import instantiate, load_subclass

log = logging.getLogger("parkrl.envs.server")


@dataclass
class ServerOptions:
    token: str | None  # None: no auth (--insecure-no-auth)
    max_sessions: int = 256
    idle_timeout_s: float = 600.0
    allow: tuple[str, ...] = ()  # import-path prefixes of the classes it may run; () = any Environment subclass


class _Session:
    def __init__(self, env: Environment, cls_path: str) -> None:
        self.env, self.cls_path = env, cls_path
        self.lock = threading.Lock()  # one call at a time: a step and the close after a cut-off step
        self.last_used = time.monotonic()


class _ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, detail, headers


def create_app(options: ServerOptions) -> FastAPI:
    """The ASGI app of one environment server."""
    sessions: dict[str, _Session] = {}
    registry = CollectorRegistry()
    opened = Counter("parkrl_env_sessions_opened", "sessions opened", ["env"], registry=registry)
    calls = Counter("parkrl_env_calls", "environment calls by outcome", ["call", "outcome"], registry=registry)
    step_seconds = Histogram("parkrl_env_step_seconds", "time in Environment.step", registry=registry,
                             buckets=(0.001, 0.005, 0.02, 0.1, 0.5, 2, 10, 60))
    Gauge("parkrl_env_sessions_active", "open sessions", registry=registry).set_function(lambda: len(sessions))
    token = options.token.encode() if options.token else None

    def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise _ApiError(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                            {"WWW-Authenticate": "Bearer"})

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _ApiError(400, f"the body of {request.method} {request.url.path} must be a JSON object")
        return body

    def session(sid: str) -> _Session:
        s = sessions.get(sid)
        if s is None:
            raise _ApiError(404, f"session {sid!r} not found (closed, idle too long, or the server restarted)")
        s.last_used = time.monotonic()
        return s

    def close(sid: str) -> None:
        s = sessions.pop(sid, None)
        if s is None:
            return

        def run() -> None:
            with s.lock:  # after a step still running (its client gave up) returns
                try:
                    s.env.close()
                except Exception as e:  # noqa: BLE001 - the episode is over either way
                    log.warning("%s.close of session %s raised %s: %s", s.cls_path, sid, type(e).__name__, e)

        threading.Thread(target=run, daemon=True, name=f"env-close-{sid[:8]}").start()

    async def reap() -> None:
        while True:
            await asyncio.sleep(min(30.0, max(0.5, options.idle_timeout_s / 4)))
            now = time.monotonic()
            for sid, s in list(sessions.items()):
                if now - s.last_used > options.idle_timeout_s and not s.lock.locked():
                    log.info("closing session %s (%s): idle for %.0f s", sid, s.cls_path, now - s.last_used)
                    close(sid)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        task = asyncio.create_task(reap())
        try:
            yield
        finally:
            task.cancel()
            for sid in list(sessions):
                close(sid)

    app = FastAPI(title="parkrl environment server", lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None)

    @app.exception_handler(_ApiError)
    async def _api_error(request: Request, exc: _ApiError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "sessions": len(sessions), "isolation": "none"}

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        authorize(request)
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/sessions", status_code=201)
    async def create(request: Request) -> dict[str, Any]:
        authorize(request)
        body = await body_of(request)
        cls_path, args, sample = body.get("env"), body.get("args") or {}, body.get("sample")
        if not isinstance(cls_path, str) or not cls_path:
            raise _ApiError(400, '"env" must name an Environment class, e.g. "parkrl.envs.ToolEnvironment"')
        if options.allow and not cls_path.startswith(options.allow):
            raise _ApiError(400, f"env {cls_path!r} is not one this server runs (its --allow: "
                                 f"{', '.join(options.allow)})")
        if len(sessions) >= options.max_sessions:
            calls.labels("create", "full").inc()
            raise _ApiError(429, f"the server holds its maximum of {options.max_sessions} sessions",
                            {"Retry-After": "1"})
        try:
            cls = load_subclass(cls_path, Environment, "env.cls")
            env = instantiate(cls, dict(args), "env.args")
        except Exception as e:  # noqa: BLE001 - named back to the trainer before step 1
            calls.labels("create", "bad_env").inc()
            raise _ApiError(400, f"this environment server cannot build {cls_path}: {e}") from None
        s = _Session(env, cls_path)
        observation: list[dict[str, str]] = []
        if sample is not None:
            try:
                observation = await run_in_threadpool(env.reset, sample)  # not registered yet: no other caller
            except Exception as e:  # noqa: BLE001 - the episode's failure, told to its caller
                calls.labels("reset", "error").inc()
                await run_in_threadpool(_quiet_close, env)
                raise _ApiError(500, f"{cls.__name__}.reset raised {type(e).__name__}: {e}") from None
        sid = secrets.token_urlsafe(16)
        sessions[sid] = s
        opened.labels(cls_path).inc()
        return {"session_id": sid, "observation": observation, "stop": list(env.stop),
                "uses_sandbox": bool(getattr(env, "uses_sandbox", False))}

    @app.post("/v1/sessions/{sid}/step")
    async def step(sid: str, request: Request) -> dict[str, Any]:
        authorize(request)
        s = session(sid)
        text = (await body_of(request)).get("text")
        if not isinstance(text, str):
            raise _ApiError(400, '"text" (the assistant turn) must be a string')

        def run() -> StepResult:
            with s.lock:
                start = time.perf_counter()
                try:
                    return s.env.step(text)
                finally:
                    step_seconds.observe(time.perf_counter() - start)

        try:
            result = await run_in_threadpool(run)
        except Exception as e:  # noqa: BLE001 - this episode ends; the others go on
            calls.labels("step", "error").inc()
            close(sid)
            raise _ApiError(500, f"{type(s.env).__name__}.step raised {type(e).__name__}: {e}") from None
        calls.labels("step", "ok").inc()
        if not isinstance(result, StepResult):
            close(sid)
            raise _ApiError(500, f"{type(s.env).__name__}.step returned {type(result).__name__}, not a StepResult")
        return asdict(result)

    @app.delete("/v1/sessions/{sid}", status_code=204)
    async def delete(sid: str, request: Request) -> Response:
        authorize(request)
        session(sid)
        close(sid)
        return Response(status_code=204)

    return app


def _quiet_close(env: Environment) -> None:
    with contextlib.suppress(Exception):
        env.close()
