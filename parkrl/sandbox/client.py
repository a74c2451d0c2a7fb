"""Python clients of a sandbox server (or of the gateway, which speaks the same API).

    with SandboxClient("http://127.0.0.1:8080", token) as sb:
        sid = sb.create_session()
        print(sb.exec(sid, "echo hi").stdout)
        sb.close_session(sid)

Every call has a deadline (an exec's is its command timeout plus a margin). Failures raise
`SandboxError`, whose message names the URL and, for session calls, the session id; HTTP 429 raises
`SandboxBusy` with `retry_after` (seconds); an unknown session raises `SandboxNotFound`.
`AsyncSandboxClient` is the same API for asyncio.
"""
from __future__ import annotations

import base64
import json as _json
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import httpx

from .http11 import Http11Pool
from .protocol import ExecResponse, RunCodeResponse

EXEC_MARGIN_S = 15.0  # how much longer than the command's timeout a client waits for an exec answer


class SandboxError(RuntimeError):
    """A sandbox server call failed. `status` is the HTTP status (None: no answer)."""

    def __init__(self, message: str, status: int | None = None, url: str = "", session_id: str | None = None):
        super().__init__(message)
        self.status, self.url, self.session_id = status, url, session_id


class SandboxBusy(SandboxError):
    """The server is at its session cap (HTTP 429); retry after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: float, **kw: Any):
        super().__init__(message, **kw)
        self.retry_after = retry_after


class SandboxNotFound(SandboxError):
    """The session does not exist (closed, reaped after idle, never created)."""


def _b64(data: bytes | str) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class _Base:
    def __init__(self, url: str, token: str | None, timeout_s: float = 30.0):
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}

    def _exec_timeout(self, timeout_s: float | None) -> float:
        return max(self.timeout_s, (timeout_s if timeout_s is not None else 10.0) + EXEC_MARGIN_S)

    def _check(self, resp: httpx.Response, what: str, sid: str | None) -> httpx.Response:
        if resp.status_code < 400:
            return resp
        try:
            detail = resp.json().get("detail", resp.text)
        except ValueError:
            detail = resp.text
        where = f"{what} on {self.url}" + (f" (session '{sid}')" if sid else "")
        message = f"sandbox server: {where} failed with HTTP {resp.status_code}: {detail}"
        kw = dict(status=resp.status_code, url=self.url, session_id=sid)
        if resp.status_code == 429:
            raise SandboxBusy(message, retry_after=float(resp.headers.get("retry-after", "1") or 1), **kw)
        if resp.status_code == 404 and sid is not None:
            raise SandboxNotFound(message, **kw)
        raise SandboxError(message, **kw)

    def _transport_error(self, e: Exception, what: str, sid: str | None) -> SandboxError:
        where = f"{what} on {self.url}" + (f" (session '{sid}')" if sid else "")
        kind = "timed out" if isinstance(e, httpx.TimeoutException) else "failed"
        return SandboxError(f"sandbox server: {where} {kind}: {type(e).__name__}: {e}", url=self.url, session_id=sid)

    @staticmethod
    def _run_code_body(code: str, language: str, run_timeout: float, memory_limit_MB: int, stdin: str | None,
                       files: Mapping[str, bytes | str] | None, fetch_files: list[str] | None) -> dict:
        return {"code": code, "language": language, "run_timeout": run_timeout, "memory_limit_MB": memory_limit_MB,
                "stdin": stdin, "files": {p: _b64(c) for p, c in (files or {}).items()},
                "fetch_files": list(fetch_files or [])}


class SandboxClient(_Base):
    """Blocking client (httpx.Client underneath; thread-safe for concurrent calls)."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 30.0, **httpx_kwargs: Any):
        super().__init__(url, token, timeout_s)
        self._http = httpx.Client(base_url=self.url, headers=self._headers, timeout=timeout_s, **httpx_kwargs)

    def _request(self, method: str, path: str, what: str, sid: str | None = None, timeout: float | None = None,
                 **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, timeout=timeout or self.timeout_s, **kw)
        except httpx.HTTPError as e:
            raise self._transport_error(e, what, sid) from e
        return self._check(resp, what, sid)

    def health(self) -> dict:
        """GET /healthz."""
        return self._request("GET", "/healthz", "health check").json()

    def metrics(self) -> str:
        """GET /metrics (Prometheus text)."""
        return self._request("GET", "/metrics", "metrics").text

    def create_session(self, idle_timeout_s: float | None = None) -> str:
        """A new session's id."""
        body = {} if idle_timeout_s is None else {"idle_timeout_s": idle_timeout_s}
        return self._request("POST", "/v1/sessions", "create session", json=body).json()["session_id"]

    def exec(self, sid: str, command: str, timeout_s: float | None = None) -> ExecResponse:
        """Run `command` in session `sid`'s persistent shell."""
        body: dict = {"command": command}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        resp = self._request("POST", f"/v1/sessions/{sid}/exec", "exec", sid, timeout=self._exec_timeout(timeout_s),
                             json=body)
        return ExecResponse.model_validate(resp.json())

    def write_file(self, sid: str, path: str, content: bytes | str) -> int:
        """Write a file in the workspace; returns its size."""
        resp = self._request("PUT", f"/v1/sessions/{sid}/files", f"write {path!r}", sid,
                             json={"path": path, "content_b64": _b64(content)})
        return int(resp.json()["bytes"])

    def read_file(self, sid: str, path: str) -> bytes:
        """A workspace file's content."""
        resp = self._request("GET", f"/v1/sessions/{sid}/files", f"read {path!r}", sid, params={"path": path})
        return base64.b64decode(resp.json()["content_b64"])

    def close_session(self, sid: str) -> None:
        """End the session (everything in it is killed)."""
        self._request("DELETE", f"/v1/sessions/{sid}", "close session", sid)

    def run_code(self, code: str, language: str = "python", run_timeout: float = 10.0, memory_limit_MB: int = -1,
                 stdin: str | None = None, files: Mapping[str, bytes | str] | None = None,
                 fetch_files: list[str] | None = None) -> RunCodeResponse:
        """SandboxFusion-style stateless run in a fresh sandbox."""
        body = self._run_code_body(code, language, run_timeout, memory_limit_MB, stdin, files, fetch_files)
        resp = self._request("POST", "/run_code", "run_code", timeout=self._exec_timeout(run_timeout) + 30, json=body)
        return RunCodeResponse.model_validate(resp.json())

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncSandboxClient(_Base):
    """asyncio client. For a plain http:// URL and no httpx options it uses a lean keep-alive
    HTTP/1.1 client (http11.py; httpx's pool costs milliseconds of CPU per call when many calls
    are in flight), else httpx.AsyncClient with `httpx_kwargs`."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 30.0, **httpx_kwargs: Any):
        super().__init__(url, token, timeout_s)
        self._fast: Http11Pool | None = None
        self._http: httpx.AsyncClient | None = None
        if not httpx_kwargs and Http11Pool.supports(self.url):
            self._fast = Http11Pool(self._headers, max_connections=256, max_idle=256)
        else:
            httpx_kwargs.setdefault("limits", httpx.Limits(max_connections=256, max_keepalive_connections=256))
            self._http = httpx.AsyncClient(base_url=self.url, headers=self._headers, timeout=timeout_s,
                                           **httpx_kwargs)

    async def _request(self, method: str, path: str, what: str, sid: str | None = None,
                       timeout: float | None = None, json: Any = None,
                       params: dict[str, str] | None = None) -> httpx.Response:
        try:
            if self._fast is not None:
                if params:
                    path += "?" + urlencode(params)
                content = None if json is None else _json.dumps(json, allow_nan=False).encode()
                resp = await self._fast.request(method, self.url, path, content=content,
                                                content_type="application/json" if content is not None else None,
                                                timeout=timeout or self.timeout_s)
            else:
                resp = await self._http.request(method, path, timeout=timeout or self.timeout_s, json=json,
                                                params=params)
        except httpx.HTTPError as e:
            raise self._transport_error(e, what, sid) from e
        return self._check(resp, what, sid)

    async def health(self) -> dict:
        return (await self._request("GET", "/healthz", "health check")).json()

    async def create_session(self, idle_timeout_s: float | None = None) -> str:
        body = {} if idle_timeout_s is None else {"idle_timeout_s": idle_timeout_s}
        return (await self._request("POST", "/v1/sessions", "create session", json=body)).json()["session_id"]

    async def exec(self, sid: str, command: str, timeout_s: float | None = None) -> ExecResponse:
        body: dict = {"command": command}
        if timeout_s is not None:
            body["timeout_s"] = timeout_s
        resp = await self._request("POST", f"/v1/sessions/{sid}/exec", "exec", sid,
                                   timeout=self._exec_timeout(timeout_s), json=body)
        return ExecResponse.model_validate(resp.json())

    async def write_file(self, sid: str, path: str, content: bytes | str) -> int:
        resp = await self._request("PUT", f"/v1/sessions/{sid}/files", f"write {path!r}", sid,
                                   json={"path": path, "content_b64": _b64(content)})
        return int(resp.json()["bytes"])

    async def read_file(self, sid: str, path: str) -> bytes:
        resp = await self._request("GET", f"/v1/sessions/{sid}/files", f"read {path!r}", sid, params={"path": path})
        return base64.b64decode(resp.json()["content_b64"])

    async def close_session(self, sid: str) -> None:
        await self._request("DELETE", f"/v1/sessions/{sid}", "close session", sid)

    async def run_code(self, code: str, language: str = "python", run_timeout: float = 10.0,
                       memory_limit_MB: int = -1, stdin: str | None = None,
                       files: Mapping[str, bytes | str] | None = None,
                       fetch_files: list[str] | None = None) -> RunCodeResponse:
        body = self._run_code_body(code, language, run_timeout, memory_limit_MB, stdin, files, fetch_files)
        resp = await self._request("POST", "/run_code", "run_code", timeout=self._exec_timeout(run_timeout) + 30,
                                   json=body)
        return RunCodeResponse.model_validate(resp.json())

    async def aclose(self) -> None:
        if self._fast is not None:
            await self._fast.aclose()
        if self._http is not None:
            await self._http.aclose()

    async def __aenter__(self) -> AsyncSandboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
