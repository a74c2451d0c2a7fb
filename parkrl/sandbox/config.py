"""Settings of a sandbox server: the limits each sandbox gets and how the server runs them."""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field

WORKSPACE = "/workspace"  # how clients name the workspace, with or without isolation

# Host uids for sandboxes start here (one per slot). Above the ranges that /etc/subuid, systemd
# dynamic users and systemd-nspawn's container ranges (0x80000..0x6FFF0000) hand out.
DEFAULT_UID_BASE = 2_000_000_000


def default_python() -> str:
    """The interpreter sandboxes run (runner, `python3`): Debian's /usr/bin/python3 when present,
    since /usr is bound anyway; else this server's own base installation."""
    if os.path.exists("/usr/bin/python3"):
        return "/usr/bin/python3"
    import sys

    return os.path.realpath(shutil.which("python3", path=os.path.join(sys.base_prefix, "bin")) or sys.executable)


@dataclass
class SandboxLimits:
    """What one sandbox (session or /run_code call) may use.

    rlimits apply to every process a command starts: `memory_mb` is RLIMIT_AS per process,
    `max_processes` is RLIMIT_NPROC counted over the whole sandbox (its own user namespace and uid),
    `cpu_s` RLIMIT_CPU per process, `file_mb` RLIMIT_FSIZE, `max_open_files` RLIMIT_NOFILE.
    Tmpfs sizes cap the writable places: /workspace, and /tmp and /dev/shm each `tmp_mb`.
    """

    memory_mb: int = 2048
    max_processes: int = 64
    cpu_s: int = 300
    file_mb: int = 256
    max_open_files: int = 1024
    workspace_mb: int = 256
    tmp_mb: int = 64
    output_cap_bytes: int = 64 * 1024
    max_file_bytes: int = 16 * 1024 * 1024
    nice: int = 10

    def rlimits(self) -> dict[str, int]:
        """The rlimits in the form the in-sandbox runner takes."""
        return {"cpu_s": self.cpu_s, "memory_mb": self.memory_mb, "max_processes": self.max_processes,
                "file_mb": self.file_mb, "max_open_files": self.max_open_files}


@dataclass
class ServerConfig:
    """Everything `python -m parkrl.sandbox.server` takes, in one place."""

    token: str | None = None
    max_sessions: int = 64
    idle_timeout_s: float = 900.0
    max_idle_timeout_s: float = 3600.0
    default_timeout_s: float = 10.0
    max_timeout_s: float = 300.0
    run_code_wait_s: float = 30.0
    limits: SandboxLimits = field(default_factory=SandboxLimits)
    isolation: str = "bwrap"  # "bwrap" | "none"
    bwrap: str | None = None  # path; None: look on PATH
    python: str = field(default_factory=default_python)
    ro_binds: list[tuple[str, str]] = field(default_factory=list)
    uid_base: int = DEFAULT_UID_BASE
    reap_interval_s: float = 1.0

    @property
    def max_body_bytes(self) -> int:
        """Largest request body accepted: a file at the size cap, base64-encoded, plus slack."""
        return self.limits.max_file_bytes * 4 // 3 + (1 << 20)
