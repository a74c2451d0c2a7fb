"""Run model-written Python in a separate, limited process (the `python` tool's back end).

What the isolation relies on (see docs/extending.md#the-code-sandbox):
- a fresh temporary directory as the working directory, deleted afterwards;
- a new session, killed as a whole process group when the code ends or overruns;
- resource limits on CPU time, address space (memory), file size, open files and processes;
- a private network namespace with no interfaces where the OS allows it (root, or
  unprivileged user namespaces), so no socket can reach anything;
- an audit hook inside the child interpreter that refuses, at the Python level: sockets,
  fork/exec/subprocess/kill, ctypes (raw system calls), writes or deletes outside the temporary
  directory, and reads outside it and the Python installation.

What it does not cover: the audit hook is not a security boundary against native code (a C
extension already installed could make raw system calls), and on a host where the network
namespace is refused, only the audit hook stops sockets. For untrusted code at scale, run the
rollout workers in gVisor/Firecracker-style containers as well.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

# Runs inside the child interpreter before the user's code: limits, network namespace, hook.
_BOOTSTRAP = r'''
import os, sys, resource
root, code_file, cpu_s, mem_mb, file_mb, nproc = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:7])
MB = 1 << 20
for limit, soft, hard in ((resource.RLIMIT_CPU, cpu_s, cpu_s + 1), (resource.RLIMIT_AS, mem_mb * MB, mem_mb * MB),
                          (resource.RLIMIT_FSIZE, file_mb * MB, file_mb * MB), (resource.RLIMIT_NPROC, nproc, nproc),
                          (resource.RLIMIT_NOFILE, 64, 64), (resource.RLIMIT_CORE, 0, 0)):
    try:
        resource.setrlimit(limit, (soft, hard))  # CPU: SIGXCPU at the soft limit, SIGKILL a second later
    except (ValueError, OSError):
        pass
try:
    import ctypes
    if ctypes.CDLL(None, use_errno=True).unshare(0x40000000) != 0:  # CLONE_NEWNET
        raise OSError
except Exception:
    pass  # no namespace here: the hook below still refuses sockets
root = os.path.realpath(root)
readable = [root] + sorted({os.path.realpath(p) for p in (*sys.path, sys.prefix, sys.base_prefix,
                                                           sys.exec_prefix) if p and os.path.isdir(p)})

def inside(path, roots):
    if isinstance(path, int):
        return True
    p = os.path.realpath(os.path.join(root, os.fsdecode(path)))
    return any(p == r or p.startswith(r + os.sep) for r in roots)

WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
BLOCKED = {"socket.__new__": "opening a network socket", "socket.connect": "network access",
           "os.fork": "starting processes", "os.forkpty": "starting processes", "os.system": "starting processes",
           "os.exec": "starting processes", "os.posix_spawn": "starting processes", "os.spawn": "starting processes",
           "subprocess.Popen": "starting processes", "os.kill": "signalling processes",
           "os.killpg": "signalling processes", "ctypes.dlopen": "ctypes", "ctypes.dlsym": "ctypes",
           "ctypes.cdata": "ctypes", "ctypes.call_function": "ctypes"}
PATH_EVENTS = {"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.symlink", "os.link", "os.chmod",
               "os.chown", "os.truncate", "os.utime", "shutil.rmtree", "os.chdir"}

def hook(event, args):
    if event in BLOCKED:
        raise PermissionError(f"sandbox: {BLOCKED[event]} is not allowed")
    if event == "open":
        path, mode, flags = args
        writing = (mode is not None and any(c in mode for c in "wax+")) or bool((flags or 0) & WRITE_FLAGS)
        if writing and not inside(path, [root]):
            raise PermissionError(f"sandbox: writing outside the sandbox directory is not allowed: {path}")
        if not writing and not inside(path, readable):
            raise PermissionError(f"sandbox: reading outside the sandbox directory is not allowed: {path}")
    elif event in PATH_EVENTS:
        for a in args:
            if isinstance(a, (str, bytes, os.PathLike)) and not inside(a, [root]):
                raise PermissionError(f"sandbox: {event} outside the sandbox directory is not allowed: {a}")

source = open(code_file).read()
sys.modules.pop("ctypes", None)
sys.addaudithook(hook)
del resource
sys.argv = ["main.py"]
try:
    exec(compile(source, "main.py", "exec"), {"__name__": "__main__"})
except SystemExit:
    raise
except BaseException as e:  # the traceback of the user's code only, not of this bootstrap
    import traceback
    traceback.print_exception(type(e), e, e.__traceback__.tb_next)
    sys.exit(1)
'''


@dataclass
class SandboxLimits:
    """Limits of one run; `output_chars` caps what comes back of stdout and of stderr each."""

    cpu_s: int = 5
    wall_s: float = 10.0
    memory_mb: int = 1024
    file_mb: int = 16
    max_processes: int = 32
    output_chars: int = 2000


@dataclass
class SandboxResult:
    stdout: str
    stderr: str
    exit_code: int | None  # None when it was killed for overrunning the wall time
    timed_out: bool
    truncated: bool

    def observation(self) -> str:
        """What the model sees: its output, or what went wrong, in a few lines."""
        parts = []
        if self.timed_out:
            parts.append("error: the code ran too long and was stopped")
        elif self.exit_code and self.exit_code < 0:
            parts.append(f"error: the code was killed by {signal.Signals(-self.exit_code).name}"
                         f"{' (CPU time limit)' if -self.exit_code == signal.SIGXCPU else ''}")
        if self.stdout:
            parts.append(self.stdout)
        if self.stderr.strip() and (self.exit_code or not self.stdout):
            parts.append(self.stderr.strip().splitlines()[-1])  # the error itself
        if self.truncated:
            parts.append("[output truncated]")
        return "\n".join(parts).strip() or "(no output)"


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run `code` with `python` in a fresh temporary directory under `limits`; never hangs
    longer than `limits.wall_s` plus a second to collect the output."""
    lim = limits or SandboxLimits()
    work = tempfile.mkdtemp(prefix="parkrl-sandbox-")
    logs = tempfile.mkdtemp(prefix="parkrl-sandbox-out-")  # outside the code's reach
    try:
        code_file = os.path.join(work, "main.py")
        with open(code_file, "w") as f:
            f.write(code)
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "PYTHONDONTWRITEBYTECODE": "1",
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        cmd = [sys.executable, "-I", "-c", _BOOTSTRAP, work, code_file, str(lim.cpu_s), str(lim.memory_mb),
               str(lim.file_mb), str(lim.max_processes)]
        with open(os.path.join(logs, "out"), "wb") as out, open(os.path.join(logs, "err"), "wb") as err:
            proc = subprocess.Popen(cmd, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            timed_out = False
            try:
                proc.wait(timeout=lim.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            _kill_group(proc.pid)  # anything it left behind goes too
            if timed_out:
                proc.wait(timeout=5)
        stdout, cut_out = _read(os.path.join(logs, "out"), lim.output_chars)
        stderr, cut_err = _read(os.path.join(logs, "err"), lim.output_chars, tail=True)
        return SandboxResult(stdout, stderr, None if timed_out else proc.returncode, timed_out, cut_out or cut_err)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(logs, ignore_errors=True)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    time.sleep(0)  # let the kernel reap before the caller removes the directory


def _read(path: str, limit: int, tail: bool = False) -> tuple[str, bool]:
    """The first (or, for errors, the last) `limit` characters of a file, and whether it was cut."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if tail:
            f.seek(max(0, size - limit * 4 - 4))
        data = f.read(limit * 4 + 4)
    text = data.decode("utf-8", errors="replace")
    if len(text) <= limit and len(data) == size:
        return text, False
    return (text[-limit:] if tail else text[:limit]), True
