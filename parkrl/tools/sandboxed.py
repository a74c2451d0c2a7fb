"""Tools that act through the sandbox service (the gateway in front of sandbox servers):

- `terminal`: shell commands in the episode's own sandbox session (a persistent shell: working
  directory, exported variables and files carry from call to call);
- `python`: Python code run by the service's SandboxFusion-compatible `POST /run_code` (a fresh
  sandbox per call), so it can also point at an existing SandboxFusion deployment;
- `think`: the model's own notes; nothing runs, the observation is empty.

The service's address comes from the run (`sandbox.url` + `sandbox.token_file`, or the service the
trainer started with `sandbox.servers=N`): every engine worker calls `connect` once, and each
episode's environment holds one `EpisodeSandbox`, which opens the session on first use and closes
it when the episode ends (`Environment.close`), also after an error or an abort. Failures of the
service (a full fleet, a lost server, a timeout) come back to the model as observations, never
as a crash of the rollout; `sandbox.on_server_lost=retry` opens a new session instead, replays
the episode's set-up (its files) and runs the command again, once.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, TypeVar

import httpx

from parkrl.sandbox.client import SandboxBusy, SandboxClient, SandboxError, SandboxNotFound
from parkrl.sandbox.protocol import ExecResponse
from parkrl.tools.base import Tool

T = TypeVar("T")
logging.getLogger("httpx").setLevel(logging.WARNING)  # it logs every request at INFO: thousands per step


@dataclass
class SandboxEndpoint:
    """Where this process's sandbox tools send their calls."""

    url: str
    token: str
    timeout_s: float = 30.0  # deadline of every call but exec (whose deadline is its command's timeout + a margin)
    on_server_lost: str = "observation"  # observation | retry
    busy_wait_s: float = 30.0  # how long session creation retries a full fleet (HTTP 429) before giving up


def endpoint_for(url: str, token_file: str, call_timeout_s: float = 30.0, on_server_lost: str = "observation",
                 busy_wait_s: float = 30.0) -> SandboxEndpoint:
    """The endpoint at `url` with the token read from `token_file` (errors name the file)."""
    try:
        token = open(token_file).read().strip()
    except OSError as e:
        raise SandboxError(f"sandbox.token_file={token_file!r}: cannot read it ({e.strerror})", url=url) from e
    if not token:
        raise SandboxError(f"sandbox.token_file={token_file!r} is empty: it must hold this run's token for {url}",
                           url=url)
    return SandboxEndpoint(url, token, call_timeout_s, on_server_lost, busy_wait_s)


def verify(endpoint: SandboxEndpoint, timeout_s: float = 10.0) -> dict:
    """Check before a run starts that the service answers and takes the token; returns its health.
    Errors name the URL: unreachable, not a parkrl sandbox service, or a rejected token."""
    with SandboxClient(endpoint.url, endpoint.token, timeout_s) as client:
        try:
            health = client.health()
        except SandboxError as e:
            raise SandboxError(f"sandbox.url={endpoint.url!r} does not answer: {e}", url=endpoint.url) from e
        try:
            client.metrics()  # any authenticated route
        except SandboxError as e:
            if e.status in (401, 403):
                raise SandboxError(f"sandbox.url={endpoint.url!r} rejected the token in sandbox.token_file "
                                   f"(HTTP {e.status}): give the token this service has for the run",
                                   url=endpoint.url) from e
            raise
    return health


_endpoint: SandboxEndpoint | None = None
_client: SandboxClient | None = None
_lock = threading.Lock()


def connect(endpoint: SandboxEndpoint | None) -> None:
    """Point this process's sandbox tools at `endpoint` (None: disconnect)."""
    global _endpoint, _client
    with _lock:
        if _client is not None:
            _client.close()
        _endpoint, _client = endpoint, None


def shared_client() -> tuple[SandboxClient, SandboxEndpoint]:
    """The process's one client (httpx pools connections and is thread-safe) and its endpoint."""
    global _client
    with _lock:
        if _endpoint is None:
            raise SandboxError("no sandbox service: set sandbox.url and sandbox.token_file, or sandbox.servers=N "
                               "to have the trainer start one")
        if _client is None:
            _client = SandboxClient(_endpoint.url, _endpoint.token, _endpoint.timeout_s)
        return _client, _endpoint


def retrying(call: Callable[[], T], endpoint: SandboxEndpoint) -> T:
    """`call()`, retried for up to `busy_wait_s` while the service refuses connections (a gateway
    restarting: the request never reached it) or answers 429 (a full fleet: waiting as told)."""
    deadline = time.monotonic() + endpoint.busy_wait_s
    while True:
        try:
            return call()
        except SandboxBusy as e:
            wait = e.retry_after
            if time.monotonic() + wait > deadline:
                raise SandboxError(f"{e} (still full after sandbox.busy_wait_s={endpoint.busy_wait_s})") from e
        except SandboxError as e:
            wait = 0.25
            if not isinstance(e.__cause__, httpx.ConnectError) or time.monotonic() > deadline:
                raise
        time.sleep(wait)


class EpisodeSandbox:
    """The one sandbox session of an episode, shared by its tools: opened on first use (after
    `setup`, e.g. writing the task's files), closed by `close`."""

    def __init__(self, setup: Callable[["EpisodeSandbox", str], None] | None = None) -> None:
        self.setup = setup
        self.session_id: str | None = None

    def _open(self) -> str:
        client, endpoint = shared_client()
        sid = retrying(client.create_session, endpoint)
        self.session_id = sid
        if self.setup is not None:
            self.setup(self, sid)
        return sid

    def session(self) -> str:
        """The episode's session id (opened now if need be)."""
        return self.session_id or self._open()

    def exec(self, command: str, timeout_s: float) -> ExecResponse:
        """Run `command` in the episode's shell; with on_server_lost=retry a lost session is
        replaced (set-up replayed) and the command run again, once."""
        client, endpoint = shared_client()
        sid = self.session()
        try:
            return retrying(lambda: client.exec(sid, command, timeout_s), endpoint)
        except SandboxError as e:
            if endpoint.on_server_lost != "retry" or not _session_lost(e):
                raise
            self.session_id = None
            return client.exec(self._open(), command, timeout_s)

    def write_file(self, path: str, content: str | bytes) -> None:
        client, endpoint = shared_client()
        sid = self.session()
        retrying(lambda: client.write_file(sid, path, content), endpoint)

    def close(self) -> None:
        """Close the session if one was opened (errors are ignored: the server reaps idle ones)."""
        sid, self.session_id = self.session_id, None
        if sid is None:
            return
        try:
            shared_client()[0].close_session(sid)
        except SandboxError:
            pass


def _session_lost(e: SandboxError) -> bool:
    """The session's server is gone or no longer knows it (a restart), as opposed to a bad call."""
    return isinstance(e, SandboxNotFound) or e.status in (None, 502, 503, 504)


class SandboxTool(Tool):
    """A tool that runs in the episode's sandbox session (`bind` gives it that session)."""

    sandbox: EpisodeSandbox | None = None
    uses_sandbox = True

    def bind(self, sandbox: EpisodeSandbox) -> None:
        self.sandbox = sandbox


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"\n[output truncated: {len(text)} characters, showing {limit}]"


class TerminalTool(SandboxTool):
    """A shell command in the episode's persistent sandbox session."""

    name = "terminal"
    description = "Run a shell command in your workspace; the working directory, variables and files persist."
    parameters = {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}

    def __init__(self, timeout_s: float = 10.0, output_chars: int = 1000) -> None:
        self.timeout_s, self.output_chars = timeout_s, output_chars

    def __call__(self, command: str) -> str:
        if self.sandbox is None:
            self.bind(EpisodeSandbox())
        r = self.sandbox.exec(str(command), self.timeout_s)
        text = r.stdout + (("\n" if r.stdout and not r.stdout.endswith("\n") else "") + r.stderr if r.stderr else "")
        notes = []
        if r.truncated:
            notes.append("[output truncated by the sandbox]")
        if r.timed_out:
            notes.append(f"[timed out after {self.timeout_s:g} s: the command and everything it started were killed]")
        elif r.exit_code:
            notes.append(f"[exit code {r.exit_code}]")
        return _clip(text.rstrip("\n"), self.output_chars) + ("\n" + "\n".join(notes) if notes else "")


class PythonTool(Tool):
    """Python code run by the sandbox service's `/run_code` (a fresh sandbox each call)."""

    name = "python"
    uses_sandbox = True
    description = "Run Python code and return what it prints."
    parameters = {"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 1024, output_chars: int = 1000) -> None:
        self.timeout_s, self.memory_mb, self.output_chars = timeout_s, memory_mb, output_chars

    def __call__(self, code: str) -> str:
        client, endpoint = shared_client()
        r = retrying(lambda: client.run_code(str(code), "python", run_timeout=self.timeout_s,
                                                 memory_limit_MB=self.memory_mb), endpoint)
        run = r.run_result
        if r.status == "SandboxError" or run is None:
            raise SandboxError(f"the sandbox could not run the code: {r.message}")
        text = (run.stdout or "") + (run.stderr or "")
        if run.status == "TimeLimitExceeded":
            text += f"\n[timed out after {self.timeout_s:g} s]"
        elif run.return_code:
            text += f"\n[exit code {run.return_code}]"
        return _clip(text.strip("\n"), self.output_chars) or "(no output)"


class ThinkTool(Tool):
    """A place for the model's reasoning: nothing runs; counted as `env/think_calls_mean`."""

    name = "think"
    description = "Think out loud before acting; nothing is run and nothing comes back."
    parameters = {"type": "object", "properties": {"thought": {"type": "string"}}, "required": ["thought"]}

    def __call__(self, thought: str) -> str:
        return ""
