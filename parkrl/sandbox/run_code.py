"""SandboxFusion-compatible POST /run_code: one fresh sandbox per call, nothing kept.

Semantics (as SandboxFusion): `files` are written into the working directory first (base64;
a null value is skipped), the code runs there (`python3 <file>` or `bash <file>`) with `stdin`,
under `run_timeout` and `memory_limit_MB` (both capped by the server); `fetch_files` are read back
(missing ones are left out, with a note in `message`). `status` is "Success" when the run finished
with return code 0, "Failed" when it finished otherwise or ran out of time, "SandboxError" when the
sandbox itself failed (an unwritable file, a sandbox that did not start).
"""
from __future__ import annotations

import base64
import binascii
import logging

from .config import ServerConfig
from .manager import SessionManager
from .protocol import CommandRunResult, RunCodeRequest, RunCodeResponse
from .session import SessionError

log = logging.getLogger(__name__)

RUNNERS = {"python": ("main.py", "python3 {file}"), "bash": ("main.sh", "bash {file}")}


def _code_file(language: str, taken: set[str]) -> tuple[str, str]:
    name, command = RUNNERS[language]
    if name in taken or "./" + name in taken:
        stem, ext = name.rsplit(".", 1)
        name = f"{stem}_parkrl.{ext}"
    return name, command.format(file=name)


async def run_code(request: RunCodeRequest, manager: SessionManager, config: ServerConfig) -> RunCodeResponse:
    """Run one /run_code request in a fresh sandbox (waits up to `run_code_wait_s` for a free slot;
    SessionCapReached propagates to become a 429)."""
    timeout = min(max(float(request.run_timeout), 0.001), config.max_timeout_s)
    memory_mb = None
    if request.memory_limit_MB and request.memory_limit_MB > 0:
        memory_mb = min(int(request.memory_limit_MB), config.limits.memory_mb)
    async with manager.ephemeral(config.run_code_wait_s) as session:
        notes = []
        try:
            for path, content in request.files.items():
                if content is None:
                    continue
                try:
                    data = base64.b64decode(content, validate=True)
                except (binascii.Error, ValueError):
                    return RunCodeResponse(status="SandboxError", message=f"files[{path!r}] is not valid base64")
                await session.write_file(path, data)
            name, command = _code_file(request.language, set(request.files))
            await session.write_file(name, request.code.encode())
            result = await session.exec(command, timeout,
                                        stdin=request.stdin.encode() if request.stdin else None, memory_mb=memory_mb)
            files = {}
            for path in request.fetch_files:
                try:
                    files[path] = base64.b64encode(await session.read_file(path)).decode()
                except SessionError as e:
                    if e.kind not in ("missing", "escape", "isdir", "too_big"):
                        raise
                    notes.append(f"fetch_files: {path!r} not returned ({e.kind})")
        except SessionError as e:
            log.warning("run_code failed in the sandbox: %s", e)
            return RunCodeResponse(status="SandboxError", message=str(e))
    run = CommandRunResult(
        status="TimeLimitExceeded" if result.timed_out else "Finished", execution_time=result.duration_s,
        return_code=result.exit_code, stdout=result.stdout, stderr=result.stderr)
    ok = run.status == "Finished" and run.return_code == 0
    message = "; ".join(notes + (["output truncated"] if result.truncated else []))
    return RunCodeResponse(status="Success" if ok else "Failed", message=message, run_result=run, files=files)
