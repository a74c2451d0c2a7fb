"""The trainer's side of `env.remote=true`: an `Environment` whose reset, step and close are calls
to an environment server (parkrl.envs.server), normally through a gateway.

Each episode is one session: reset opens it (the server builds `env.cls(**env.args)` and runs its
reset), step forwards the assistant turn, close deletes it. Every call has a deadline: a step
waits at most env.step_timeout_s + 5 s (the episode loop already ends the episode at
env.step_timeout_s), the others sandbox-like `call_timeout_s`. Failures raise `EnvServiceError`
naming the URL and the class, so they end only their episode under env.on_error=end_episode.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import httpx

from parkrl.envs.base import Environment, StepResult


class EnvServiceError(RuntimeError):
    """A failed call to the environment service; the message names the URL and what to fix."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class EnvEndpoint:
    url: str
    token: str
    call_timeout_s: float = 30.0
    step_timeout_s: float = 60.0
    busy_wait_s: float = 30.0  # opening a session on a full fleet (429) retries this long


def endpoint_for(url: str, token_file: str, call_timeout_s: float, step_timeout_s: float) -> EnvEndpoint:
    """The endpoint at `url` with the token in `token_file` (errors name env.token_file)."""
    try:
        token = open(token_file).read().strip() if token_file else ""
    except OSError as e:
        raise EnvServiceError(f"env.token_file={token_file!r}: cannot read it ({e.strerror})") from None
    if not token:
        raise EnvServiceError(f"env.token_file={token_file!r}: give the file holding the run's token for env.url={url!r}")
    return EnvEndpoint(url.rstrip("/"), token, call_timeout_s, step_timeout_s)


_clients: dict[EnvEndpoint, httpx.Client] = {}
_lock = threading.Lock()


def _client(endpoint: EnvEndpoint) -> httpx.Client:
    """The process's one pooled client per endpoint (httpx.Client is thread-safe)."""
    with _lock:
        client = _clients.get(endpoint)
        if client is None:
            client = _clients[endpoint] = httpx.Client(
                base_url=endpoint.url, headers={"Authorization": f"Bearer {endpoint.token}"},
                limits=httpx.Limits(max_connections=512, max_keepalive_connections=512))
        return client


def call(endpoint: EnvEndpoint, method: str, path: str, body: dict[str, Any] | None = None,
         timeout_s: float | None = None) -> dict[str, Any]:
    """One call; its JSON answer, or EnvServiceError (a 429 is retried for `busy_wait_s`)."""
    timeout_s = endpoint.call_timeout_s if timeout_s is None else timeout_s
    give_up = time.monotonic() + endpoint.busy_wait_s
    while True:
        try:
            r = _client(endpoint).request(method, path, json=body, timeout=timeout_s)
        except httpx.TimeoutException:
            raise EnvServiceError(f"the environment service at {endpoint.url} did not answer {method} {path} within "
                                  f"{timeout_s:g} s") from None
        except httpx.HTTPError as e:
            raise EnvServiceError(f"the environment service at {endpoint.url} cannot be reached ({type(e).__name__}: "
                                  f"{e}); check env.url and that the service runs") from None
        if r.status_code == 429 and time.monotonic() < give_up:
            time.sleep(min(1.0, float(r.headers.get("retry-after", "1") or 1)))
            continue
        if r.status_code == 204:
            return {}
        try:
            data = r.json()
        except ValueError:
            data = {"detail": r.text[:300]}
        if r.status_code >= 400:
            detail = data.get("detail") if isinstance(data, dict) else data
            if r.status_code in (401, 403):
                detail = f"{detail} (env.token_file does not hold a token {endpoint.url} accepts)"
            raise EnvServiceError(f"{endpoint.url}: HTTP {r.status_code}: {detail}", r.status_code)
        return data


class RemoteEnvironment(Environment):
    """`cls_path(**args)` running in the environment service at `endpoint`, one session per episode."""

    def __init__(self, endpoint: EnvEndpoint, cls_path: str, args: dict[str, Any]) -> None:
        self.endpoint, self.cls_path, self.args = endpoint, cls_path, args
        self.session_id: str | None = None
        self.stop: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"RemoteEnvironment({self.cls_path} at {self.endpoint.url}, session {self.session_id})"

    def reset(self, sample: dict[str, Any]) -> list[dict[str, str]]:
        data = call(self.endpoint, "POST", "/v1/sessions", {"env": self.cls_path, "args": self.args, "sample": sample})
        self.session_id, self.stop = data["session_id"], tuple(data.get("stop") or ())
        return data["observation"]

    def step(self, assistant_text: str) -> StepResult:
        if self.session_id is None:
            raise EnvServiceError(f"{self.cls_path}: step before reset")
        data = call(self.endpoint, "POST", f"/v1/sessions/{self.session_id}/step", {"text": assistant_text},
                    self.endpoint.step_timeout_s + 5)
        return StepResult(data.get("observation") or [], float(data.get("reward", 0.0)), bool(data.get("done")),
                          dict(data.get("info") or {}))

    def close(self) -> None:
        sid, self.session_id = self.session_id, None
        if sid is not None:
            try:
                call(self.endpoint, "DELETE", f"/v1/sessions/{sid}")
            except EnvServiceError as e:
                if e.status != 404:  # already gone (its step raised, or it idled out): nothing to close
                    raise


def remote_factory(endpoint: EnvEndpoint, cls_path: str, args: dict[str, Any]) -> Callable[[], Environment]:
    """A function making one `RemoteEnvironment` per episode."""
    return lambda: RemoteEnvironment(endpoint, cls_path, dict(args))


def check_remote(endpoint: EnvEndpoint, cls_path: str, args: dict[str, Any]) -> dict[str, Any]:
    """Before step 1: the service answers, takes the token and can build `cls_path(**args)`;
    returns what it says of the class ({"uses_sandbox", "stop"}). Errors name env.url/env.cls."""
    try:
        data = call(endpoint, "POST", "/v1/sessions", {"env": cls_path, "args": args, "sample": None})
    except EnvServiceError as e:
        raise EnvServiceError(f"env.remote: env.cls={cls_path!r} at env.url={endpoint.url!r}: {e}", e.status) from None
    call(endpoint, "DELETE", f"/v1/sessions/{data['session_id']}")
    return {"uses_sandbox": bool(data.get("uses_sandbox")), "stop": data.get("stop") or []}
