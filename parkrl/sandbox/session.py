"""One sandbox session: a long-lived sandbox whose runner executes commands and file operations.

The server talks to the runner (runner.py, the sandbox's init) over its stdin/stdout with
length-prefixed JSON frames, one request at a time (an asyncio lock per session). Everything the
runner sends is treated as untrusted: frames are size-capped and a garbled or silent runner ends
the session.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import struct
import time

from .config import SandboxLimits
from .isolation import Isolation, SandboxProcess, explain_start_failure
from .protocol import ExecResponse

log = logging.getLogger(__name__)

START_TIMEOUT_S = 15.0
KILL_GRACE_S = 10.0  # how long past a command's deadline the runner may take to kill it and answer


class SessionError(Exception):
    """A request the session refused; `kind` picks the HTTP status (see app.py)."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class SandboxBroken(SessionError):
    """The sandbox died or stopped speaking the protocol; the session is closed."""

    def __init__(self, message: str):
        super().__init__("broken", message)


class Session:
    """A sandbox with a persistent shell. Create with `await Session.start(...)`."""

    def __init__(self, sid: str, slot: int, sandbox: SandboxProcess, isolation: Isolation, limits: SandboxLimits,
                 idle_timeout_s: float):
        self.sid = sid
        self.slot = slot
        self.sandbox = sandbox
        self.isolation = isolation
        self.limits = limits
        self.idle_timeout_s = idle_timeout_s
        self.last_used = time.monotonic()
        self.busy = 0
        self.closed = False
        self._lock = asyncio.Lock()
        self._max_frame = 16 * limits.output_cap_bytes + 2 * limits.max_file_bytes + (1 << 20)

    @classmethod
    async def start(cls, sid: str, slot: int, isolation: Isolation, limits: SandboxLimits,
                    idle_timeout_s: float) -> Session:
        """Launch the sandbox and wait for its runner's ready frame."""
        runner_config = {"limits": limits.rlimits(), "nice": limits.nice}
        sandbox = await isolation.launch(slot, runner_config)
        session = cls(sid, slot, sandbox, isolation, limits, idle_timeout_s)
        try:
            ready = await asyncio.wait_for(session._recv(), START_TIMEOUT_S)
            if not ready.get("ready"):
                raise SandboxBroken(f"sandbox session '{sid}': unexpected first frame from the runner")
        except (TimeoutError, SandboxBroken, asyncio.IncompleteReadError, ConnectionError) as e:
            await sandbox.kill()
            stderr = bytes(sandbox.stderr_tail).decode("utf-8", "replace")
            if isolation.name == "bwrap" and stderr.strip():
                raise SandboxBroken(f"sandbox session '{sid}' did not start: {explain_start_failure(stderr)}") from e
            raise SandboxBroken(f"sandbox session '{sid}' did not start ({type(e).__name__}): "
                                f"{stderr.strip()!r}") from e
        return session

    @property
    def idle_for(self) -> float:
        """Seconds since the last request ended (0 while one runs)."""
        return 0.0 if self.busy else time.monotonic() - self.last_used

    async def _recv(self) -> dict:
        out = self.sandbox.proc.stdout
        assert out is not None
        header = await out.readexactly(4)
        (n,) = struct.unpack(">I", header)
        if n > self._max_frame:
            raise SandboxBroken(f"sandbox session '{self.sid}': runner frame of {n} bytes exceeds the limit")
        try:
            return json.loads(await out.readexactly(n))
        except ValueError as e:
            raise SandboxBroken(f"sandbox session '{self.sid}': garbled runner frame ({e})") from None

    async def _call(self, request: dict, timeout_s: float) -> dict:
        """One request/response with the runner; on any failure the sandbox is killed."""
        if self.closed:
            raise SessionError("gone", f"sandbox session '{self.sid}' is closed")
        self.busy += 1
        try:
            async with self._lock:
                if self.closed:
                    raise SessionError("gone", f"sandbox session '{self.sid}' is closed")
                data = json.dumps(request).encode()
                try:
                    stdin = self.sandbox.proc.stdin
                    assert stdin is not None
                    stdin.write(struct.pack(">I", len(data)) + data)
                    async with asyncio.timeout(timeout_s) as deadline:  # no extra task, as wait_for makes
                        await stdin.drain()
                        deadline.reschedule(asyncio.get_running_loop().time() + timeout_s)
                        resp = await self._recv()
                except SandboxBroken:
                    await self._die()
                    raise
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, BrokenPipeError) as e:
                    if self.closed:  # closed (DELETE, reaper, shutdown) while this request ran
                        raise SessionError(
                            "gone", f"sandbox session '{self.sid}' was closed during the request") from None
                    await self._die()
                    raise SandboxBroken(f"sandbox session '{self.sid}' stopped answering ({type(e).__name__}); "
                                        f"it was closed") from None
        finally:
            self.busy -= 1
            self.last_used = time.monotonic()
        if not resp.get("ok"):
            raise SessionError(str(resp.get("kind", "internal")), f"sandbox session '{self.sid}': {resp.get('error')}")
        return resp

    async def _die(self) -> None:
        self.closed = True
        await self.sandbox.kill()

    async def exec(self, command: str, timeout_s: float, stdin: bytes | None = None,
                   memory_mb: int | None = None) -> ExecResponse:
        """Run `command` in the session's shell; on the deadline, everything it started is killed."""
        req: dict = {"op": "exec", "command": command, "timeout": timeout_s, "cap": self.limits.output_cap_bytes}
        if stdin:
            req["stdin_b64"] = base64.b64encode(stdin).decode()
        if memory_mb:
            req["limits"] = {"memory_mb": int(memory_mb)}
        r = await self._call(req, timeout_s + KILL_GRACE_S)
        # not validated here (the hot path): the app checks the types before it answers
        return ExecResponse.model_construct(exit_code=r["exit_code"], stdout=r["stdout"], stderr=r["stderr"],
                                            timed_out=r["timed_out"], truncated=r["truncated"],
                                            duration_s=r["duration_s"])

    async def write_file(self, path: str, data: bytes) -> int:
        """Write `data` to `path` in the workspace (parents created); returns the byte count."""
        if len(data) > self.limits.max_file_bytes:
            raise SessionError("too_big", f"sandbox session '{self.sid}': {len(data)} bytes for {path!r} exceed "
                                          f"the {self.limits.max_file_bytes}-byte file limit")
        r = await self._call({"op": "write", "path": path, "data_b64": base64.b64encode(data).decode()}, 60)
        return int(r["bytes"])

    async def read_file(self, path: str) -> bytes:
        """The content of `path` in the workspace."""
        r = await self._call({"op": "read", "path": path, "max_bytes": self.limits.max_file_bytes}, 60)
        return base64.b64decode(r["data_b64"])

    async def close(self) -> None:
        """End the sandbox and everything in it. Idempotent."""
        if self.closed:
            return
        if self.isolation.needs_shutdown_op:  # only the runner knows what to kill without a PID namespace
            try:
                await asyncio.wait_for(self._call({"op": "shutdown"}, 5), 6)
            except (TimeoutError, SessionError):
                pass
        self.closed = True
        await self.sandbox.kill()
