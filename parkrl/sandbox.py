"""Run model-written Python in a separate, limited process (the `python` tool's back end).

What the containment rests on (docs/extending.md#the-code-sandbox has the full account):
- the process boundary: a fresh temporary directory, deleted afterwards; a new session killed
  as a whole process group when the code ends or overruns; limits on CPU time, address space,
  file size and open files;
- a private network namespace with no interfaces when running as root;
- uid/gid 65534 when running as root and the Python installation is world-readable;
- an audit hook inside the child that refuses sockets, processes, ctypes, links, `gc`
  inspection, directories outside its own, and reads/writes outside its directory. It is a
  guard for Python code, not a boundary against native code: for untrusted code at scale, run
  the rollout workers in gVisor/Firecracker-style containers as well.
"""
from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass

# Runs inside the child interpreter before the user's code: limits, network namespace, hook.
_BOOTSTRAP = r'''
import os, sys


def _confine(argv):
    import resource
    root, code_file, cpu_s, mem_mb, file_mb, nproc, drop_root = argv[1], argv[2], *map(int, argv[3:8])
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
        ctypes.CDLL(None, use_errno=True).unshare(0x40000000)  # CLONE_NEWNET: no interfaces (needs root)
    except Exception:
        pass
    if drop_root:  # drop root: file permissions and RLIMIT_NPROC then apply as well
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    source = open(code_file).read()
    # Everything the hook uses is bound here, once: the code cannot reach this closure, and
    # monkeypatching os, os.path or builtins later does not change what the hook does.
    import stat
    _fspath, _stat, _isdir_mode, _isinstance, _str, _bytes, _int = os.fspath, os.stat, stat.S_ISDIR, isinstance, str, bytes, int
    _perm, _any, _bool = PermissionError, any, bool
    root = os.path.realpath(root)

    def norm(path):  # absolute and normalised by string operations only (no symlinks: they are refused)
        p = _fspath(path)
        if _isinstance(p, _bytes):
            p = p.decode("utf-8", "surrogateescape")
        if not p.startswith("/"):
            p = root + "/" + p
        parts = []
        for part in p.split("/"):
            if part == "..":
                if parts:
                    parts.pop()
            elif part and part != ".":
                parts.append(part)
        return "/" + "/".join(parts)

    readable = (root,) + tuple(sorted({norm(os.path.realpath(p)) for p in (*sys.path, sys.prefix, sys.base_prefix,
                                                                               sys.exec_prefix) if p and os.path.isdir(p)}))
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC
    blocked = tuple({"socket.__new__": "opening a network socket", "socket.connect": "network access",
               "os.fork": "starting processes", "os.forkpty": "starting processes", "os.system": "starting processes",
               "os.exec": "starting processes", "os.posix_spawn": "starting processes", "os.spawn": "starting processes",
               "subprocess.Popen": "starting processes", "os.kill": "signalling processes",
               "os.killpg": "signalling processes", "ctypes.dlopen": "ctypes", "ctypes.dlsym": "ctypes",
               "ctypes.cdata": "ctypes", "ctypes.call_function": "ctypes", "os.symlink": "making links",
               "os.link": "making links", "gc.get_objects": "inspecting objects", "gc.get_referrers": "inspecting objects",
               "gc.get_referents": "inspecting objects", "sys.addaudithook": "audit hooks"}.items())  # immutable
    blocked_names = frozenset(k for k, _ in blocked)
    no_import = frozenset({"_posixsubprocess", "_ctypes", "ctypes", "_xxsubinterpreters", "_testcapi", "_testinternalcapi"})
    path_events = frozenset({"os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                             "os.utime", "shutil.rmtree", "shutil.copyfile", "shutil.move"})

    def inside(path, roots):
        p = norm(path)
        for r in roots:
            if p == r or p.startswith(r + "/"):
                return True
        return False

    def hook(event, args):
        if event in blocked_names:
            for name, what in blocked:
                if name == event:
                    raise _perm(f"sandbox: {what} is not allowed")
        if event == "import" and args[0] in no_import:
            raise _perm(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path, mode, flags = args
            if _isinstance(path, _int):
                return
            writing = (mode is not None and _any(c in mode for c in "wax+")) or _bool((flags or 0) & write_flags)
            if writing and not inside(path, (root,)):
                raise _perm(f"sandbox: writing outside the sandbox directory is not allowed: {path}")
            if not writing and not inside(path, readable):
                raise _perm(f"sandbox: reading outside the sandbox directory is not allowed: {path}")
            if not inside(path, (root,)):
                try:
                    is_dir = _isdir_mode(_stat(norm(path)).st_mode)
                except OSError:
                    is_dir = False
                if is_dir:  # a directory fd would let dir_fd= reach outside
                    raise _perm(f"sandbox: opening a directory outside the sandbox is not allowed: {path}")
        elif event == "os.chdir" and (_isinstance(args[0], _int) or not inside(args[0], (root,))):
            raise _perm("sandbox: changing to a directory outside the sandbox is not allowed")
        elif event in path_events:
            for a in args:
                if _isinstance(a, (_str, _bytes)) and not inside(a, (root,)):
                    raise _perm(f"sandbox: {event} outside the sandbox directory is not allowed: {a}")

    for name in no_import:
        sys.modules.pop(name, None)
    sys.addaudithook(hook)
    return source


def _run(source, write_error, exit_):  # everything it needs is local: clearing the module's globals changes nothing
    try:
        exec(compile(source, "main.py", "exec"), {"__name__": "__main__"})
    except SystemExit:
        raise
    except BaseException as e:  # the error and the line of main.py, not this bootstrap's frames
        tb, line = e.__traceback__, None
        while tb is not None:  # the last line of main.py on the way to the error
            if tb.tb_frame.f_code.co_filename == "main.py":
                line = tb.tb_lineno
            tb = tb.tb_next
        where = f'  File "main.py", line {line}\n' if line is not None and not isinstance(e, SyntaxError) else ""
        write_error(f"Traceback (most recent call last):\n{where}{type(e).__name__}: {e}\n")
        exit_(1)


_source = _confine(sys.argv)
del _confine
sys.argv = ["main.py"]
_run(_source, sys.stderr.write, sys.exit)
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
    work = logs = None
    try:
        work = tempfile.mkdtemp(prefix="parkrl-sandbox-")
        logs = tempfile.mkdtemp(prefix="parkrl-sandbox-out-")  # outside the code's reach
        code_file = os.path.join(work, "main.py")
        with open(code_file, "w") as f:
            f.write(code)
        drop_root = os.getuid() == 0 and _python_readable_by_others()
        if drop_root:  # the child drops to uid/gid 65534 and must own its directory
            os.chmod(work, 0o700)
            os.chown(work, 65534, 65534)
            os.chown(code_file, 65534, 65534)
        env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work,
               "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        cmd = [sys.executable, "-I", "-B", "-c", _BOOTSTRAP, work, code_file, str(lim.cpu_s), str(lim.memory_mb),
               str(lim.file_mb), str(lim.max_processes), str(int(drop_root))]
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
        for folder in (work, logs):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)


def _python_readable_by_others() -> bool:
    """Whether an unprivileged user can run this Python: its standard library and
    site-packages readable, every parent directory searchable."""
    import sysconfig

    for path in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["purelib"], os.path.realpath(sys.executable)):
        p = os.path.realpath(path)
        chain = [p] + [os.path.dirname(p)]
        while chain[-1] != os.path.dirname(chain[-1]):
            chain.append(os.path.dirname(chain[-1]))
        if not all(os.stat(a).st_mode & stat.S_IXOTH for a in chain[1:]) or not os.stat(p).st_mode & stat.S_IROTH:
            return False
    return True


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


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
