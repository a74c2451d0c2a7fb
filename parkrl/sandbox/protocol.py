"""The HTTP API's bodies (docs: the sandbox API contract), shared by server, client and gateway.

Only pydantic; no FastAPI, no server code, so the client and the gateway can import it.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SESSION_NOT_FOUND = "sandbox session '{sid}' not found (closed, reaped after idle, or never created)"


class HealthResponse(BaseModel):
    status: str = "ok"
    sessions: int
    isolation: str


class CreateSessionRequest(BaseModel):
    idle_timeout_s: float | None = Field(default=None, gt=0)


class CreateSessionResponse(BaseModel):
    session_id: str


class ExecRequest(BaseModel):
    command: str
    timeout_s: float | None = Field(default=None, gt=0)


class ExecResponse(BaseModel):
    exit_code: int | None
    stdout: str
    stderr: str
    timed_out: bool
    truncated: bool
    duration_s: float


class WriteFileRequest(BaseModel):
    path: str
    content_b64: str


class WriteFileResponse(BaseModel):
    bytes: int


class ReadFileResponse(BaseModel):
    path: str
    content_b64: str


# ---- SandboxFusion-compatible /run_code -------------------------------------------------------

class RunCodeRequest(BaseModel):
    """SandboxFusion's RunCodeRequest (the fields verl & co. send); unknown fields are ignored."""

    code: str
    language: Literal["python", "bash"] = "python"
    compile_timeout: float = 10.0
    run_timeout: float = 10.0
    memory_limit_MB: int = -1
    stdin: str | None = None
    files: dict[str, str | None] = Field(default_factory=dict)
    fetch_files: list[str] = Field(default_factory=list)


class CommandRunResult(BaseModel):
    status: Literal["Finished", "TimeLimitExceeded", "Error"]
    execution_time: float | None = None
    return_code: int | None = None
    stdout: str | None = None
    stderr: str | None = None


class RunCodeResponse(BaseModel):
    status: Literal["Success", "Failed", "SandboxError"]
    message: str = ""
    compile_result: CommandRunResult | None = None
    run_result: CommandRunResult | None = None
    executor_pod_name: str | None = None
    files: dict[str, str] = Field(default_factory=dict)
