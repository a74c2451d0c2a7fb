"""How a sandbox process is launched and killed: bubblewrap, or (insecure) a plain subprocess.

An `Isolation` starts the in-sandbox runner (runner.py) with its stdin/stdout as the protocol pipes
and returns a `SandboxProcess`. Another isolation (gVisor, Firecracker) implements the same two
methods, `check` and `launch`; the server's start-up probe then starts one real sandbox through it.

The bubblewrap sandbox (one per session) is:
- namespaces: new user, PID, network, IPC, UTS and cgroup namespaces (``--unshare-all
  --unshare-user``); the network namespace has only ``lo``, so nothing outside is reachable; nested
  user namespaces are disabled (``--disable-userns``) to keep the kernel attack surface small;
- the runner is PID 1 of its PID namespace (``--as-pid-1``): commands cannot kill it (the kernel
  drops signals to a namespace's init from inside), and killing it from outside tears down the whole
  namespace; ``--die-with-parent``: everything dies with the server;
- bwrap runs as a host uid of its own per slot (uid_base + slot) when the server is root: rlimits on
  processes then count per sandbox, not per root (the kernel never enforces RLIMIT_NPROC on host
  root), and no sandbox can signal another's processes or the server's even if it could see them;
- filesystem: read-only binds of /usr and the root-level /bin, /lib* links, a minimal /etc,
  the Python installation if outside /usr; size-capped tmpfs for /workspace, /tmp, /dev/shm and
  the runner's state; everything else read-only (``--remount-ro /``).
"""
from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .config import WORKSPACE, ServerConfig

log = logging.getLogger(__name__)

RUNNER_SOURCE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "runner.py")
STATE_DIR = "/run/parkrl"            # the runner's shell state (inside the bwrap sandbox)
RUNNER_PATH = "/run/parkrl-runner.py"
SANDBOX_UID = 1000                   # the uid/gid commands have inside the sandbox
ETC_FILES = ("alternatives", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime", "timezone", "ssl",
             "ca-certificates", "ca-certificates.conf", "nsswitch.conf", "mime.types", "protocols", "services",
             "os-release", "debian_version", "inputrc", "magic", "python3", "python3.11", "python3.12",
             "python3.13", "bash.bashrc", "profile", "terminfo", "gai.conf", "host.conf")
ROOT_DIRS = ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32")
PASSWD = ("root:x:0:0:root:/root:/usr/sbin/nologin\n"
          f"sandbox:x:{SANDBOX_UID}:{SANDBOX_UID}:sandbox:{WORKSPACE}:/bin/bash\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n")
GROUP = f"root:x:0:\nsandbox:x:{SANDBOX_UID}:\nnogroup:x:65534:\n"
HOSTS = "127.0.0.1\tlocalhost sandbox\n::1\tlocalhost ip6-localhost ip6-loopback\n"

INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install -y bubblewrap; Fedora/RHEL: dnf install "
                "bubblewrap) or point --bwrap at it")
USERNS_HINT = ("allow unprivileged user namespaces: sysctl -w user.max_user_namespaces=15000 (and on Debian "
               "kernel.unprivileged_userns_clone=1, on Ubuntu 24.04+ kernel.apparmor_restrict_unprivileged_userns=0); "
               "inside Docker/Kubernetes run the server's container with seccomp and AppArmor profiles that allow "
               "clone(CLONE_NEWUSER) (e.g. --security-opt seccomp=unconfined --security-opt apparmor=unconfined)")
BYPASS_HINT = "only for trusted code, --insecure-no-isolation runs commands without any isolation"


class Process:
    """A child process with asyncio streams on its pipes, like asyncio.subprocess.Process, but started
    with subprocess.Popen (so it can switch uid with any event loop, uvloop included) and waited for
    through a pidfd."""

    def __init__(self, popen: subprocess.Popen, stdin: asyncio.StreamWriter, stdout: asyncio.StreamReader,
                 stderr: asyncio.StreamReader):
        self._popen, self.stdin, self.stdout, self.stderr = popen, stdin, stdout, stderr
        self.pid = popen.pid

    @classmethod
    async def start(cls, argv: list[str], **popen_kwargs: Any) -> Process:
        loop = asyncio.get_running_loop()
        popen = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 bufsize=0, **popen_kwargs)
        try:
            readers = []
            for pipe in (popen.stdout, popen.stderr):
                reader = asyncio.StreamReader(limit=1 << 16)
                await loop.connect_read_pipe(lambda r=reader: asyncio.StreamReaderProtocol(r), pipe)
                readers.append(reader)
            transport, protocol = await loop.connect_write_pipe(asyncio.streams.FlowControlMixin, popen.stdin)
            writer = asyncio.StreamWriter(transport, protocol, None, loop)
        except BaseException:
            popen.kill()
            popen.wait()
            raise
        return cls(popen, writer, readers[0], readers[1])

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    def kill(self) -> None:
        if self._popen.poll() is None:
            self._popen.kill()

    async def wait(self) -> int:
        """Wait for the exit without blocking the loop (a pidfd, else polling)."""
        if self._popen.poll() is not None:
            return self._popen.returncode
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            while self._popen.poll() is None:
                await asyncio.sleep(0.02)
            return self._popen.returncode
        done = loop.create_future()
        loop.add_reader(pidfd, lambda: done.done() or done.set_result(None))
        try:
            if self._popen.poll() is None:
                await done
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return self._popen.wait()

    def close_pipes(self) -> None:
        self.stdin.close()


class IsolationUnavailable(RuntimeError):
    """The isolation cannot work on this machine; the message says why and how to fix it."""


@dataclass
class SandboxProcess:
    """A running sandbox: the runner's protocol pipes (proc.stdin/stdout) and how to end it."""

    proc: Process
    host_uid: int | None = None
    cleanup: Callable[[], None] | None = None
    stderr_tail: bytearray = field(default_factory=bytearray)
    _stderr_task: asyncio.Task | None = None

    def start_stderr_reader(self, limit: int = 8192) -> None:
        """Keep the first `limit` bytes the sandbox writes to its stderr (bwrap's errors), drop the rest."""
        async def read() -> None:
            assert self.proc.stderr is not None
            while True:
                chunk = await self.proc.stderr.read(65536)
                if not chunk:
                    return
                room = limit - len(self.stderr_tail)
                if room > 0:
                    self.stderr_tail += chunk[:room]

        self._stderr_task = asyncio.get_running_loop().create_task(read())

    inner_init: bool = False  # proc is bwrap's monitor; its only child is the sandbox's PID 1 (the runner)

    async def kill(self) -> None:
        """SIGKILL the sandbox (for bwrap: the namespace and everything in it) and wait for it.

        With bwrap the sandbox's PID 1 is killed first, so bwrap's monitor reaps it and exits;
        killing the monitor first would leave PID 1 to the host's init to reap (zombies where that
        init does not reap promptly)."""
        if self.inner_init and self.proc.returncode is None:
            for pid in _children(self.proc.pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                await asyncio.wait_for(self.proc.wait(), 2)
            except TimeoutError:
                pass
        try:
            self.proc.kill()
        except ProcessLookupError:
            pass
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except TimeoutError:
            log.error("sandbox process %s did not exit 10 s after SIGKILL", self.proc.pid)
        if self._stderr_task is not None:
            try:
                await asyncio.wait_for(self._stderr_task, 1)
            except (TimeoutError, asyncio.CancelledError):
                self._stderr_task.cancel()
        self.proc.close_pipes()
        if self.cleanup is not None:
            self.cleanup()
            self.cleanup = None


def _not_world_searchable(path: str) -> str | None:
    """The first directory on the way to `path` that others cannot search (or `path` unreadable), if any."""
    import stat

    real = os.path.realpath(path)
    parts = real.split("/")
    for i in range(2, len(parts) + 1):
        d = "/".join(parts[:i])
        mode = os.stat(d).st_mode
        if not mode & stat.S_IXOTH or (d == real and not mode & stat.S_IROTH):
            return d
    return None


def _children(ppid: int) -> list[int]:
    """Host pids whose parent is `ppid` (a scan of /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    data = f.read()
            except OSError:
                continue
            fields = data[data.rfind(b")") + 2:].split()
            if len(fields) > 1 and int(fields[1]) == ppid:
                out.append(int(name))
    return out


class Isolation(abc.ABC):
    """How sandboxes are started. `name` shows in /healthz."""

    name: str = "?"
    needs_shutdown_op: bool = False  # True when killing the runner does not kill what it started

    def __init__(self, config: ServerConfig):
        self.config = config

    @abc.abstractmethod
    async def launch(self, slot: int, runner_config: dict) -> SandboxProcess:
        """Start a sandbox for `slot` whose init is the runner with `runner_config` (completed here
        with the paths this isolation uses)."""

    @abc.abstractmethod
    def check(self) -> None:
        """Static checks before any sandbox is started; raise IsolationUnavailable with the fix."""

    def host_uid(self, slot: int) -> int | None:
        """The host uid sandbox `slot` runs as (None: the server's own)."""
        return None

    def base_env(self, workspace: str) -> dict[str, str]:
        return {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": workspace, "LANG": "C.UTF-8", "TERM": "dumb",
                "USER": "sandbox", "LOGNAME": "sandbox", "SHELL": "/bin/bash", "TMPDIR": "/tmp"}


def _memfd(name: str, data: bytes) -> int:
    fd = os.memfd_create(name, 0)
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


class BwrapIsolation(Isolation):
    """One bubblewrap sandbox per session (see the module docstring for what it shares)."""

    name = "bwrap"

    def __init__(self, config: ServerConfig):
        super().__init__(config)
        self.bwrap = config.bwrap or shutil.which("bwrap")
        self.python = config.python
        with open(RUNNER_SOURCE_PATH, "rb") as f:
            self._runner_source = f.read()
        self._extra_binds: list[tuple[str, str]] = []
        prefix = self._python_prefix(self.python)
        if prefix and not (prefix == "/usr" or prefix.startswith("/usr/")):
            self._extra_binds.append((prefix, prefix))
        self._extra_binds.extend(config.ro_binds)
        self._drop_privileges = os.geteuid() == 0

    @staticmethod
    def _python_prefix(python: str) -> str | None:
        real = os.path.realpath(python)
        if real == os.path.realpath(sys.executable):
            return os.path.realpath(sys.base_prefix)
        return os.path.dirname(os.path.dirname(real))

    def host_uid(self, slot: int) -> int | None:
        return self.config.uid_base + slot if self._drop_privileges else None

    def check(self) -> None:
        if not self.bwrap or not os.path.isfile(self.bwrap) or not os.access(self.bwrap, os.X_OK):
            where = (f"no executable at {self.config.bwrap}" if self.config.bwrap
                     else f"not on PATH={os.environ.get('PATH', '')}")
            raise IsolationUnavailable(
                f"bubblewrap (bwrap) was not found ({where}): the sandbox server needs it to isolate commands. "
                f"Fix: {INSTALL_HINT}. ({BYPASS_HINT})")
        if not os.path.exists(self.python):
            raise IsolationUnavailable(f"the sandbox Python {self.python} does not exist: pass --python PATH")
        for src, _ in self._extra_binds:
            if not os.path.isdir(src):
                raise IsolationUnavailable(f"--ro-bind {src}: no such directory")
            blocked = _not_world_searchable(src) if self._drop_privileges else None
            if blocked:
                raise IsolationUnavailable(
                    f"{src} (the sandbox Python's installation or a --ro-bind) is out of reach of the sandboxes' "
                    f"unprivileged uids: {blocked} is not readable/searchable by others. Fix: use a Python under "
                    f"/usr or /opt (--python), or chmod o+x the parent directories")
        try:
            with open("/proc/sys/user/max_user_namespaces") as f:
                disabled = int(f.read().strip() or 0) == 0
        except (OSError, ValueError):
            disabled = False
        if disabled:
            raise IsolationUnavailable(f"user namespaces are disabled (user.max_user_namespaces = 0). "
                                       f"Fix: {USERNS_HINT}. ({BYPASS_HINT})")

    def argv(self, runner_config: dict, fds: dict[str, int]) -> list[str]:
        """The bwrap command line for one sandbox; `fds` maps names to fds passed to bwrap."""
        lim = self.config.limits
        a = [self.bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent",
             "--new-session", "--as-pid-1", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
             "--hostname", "sandbox", "--perms", "0755", "--dir", "/etc", "--perms", "0755", "--dir", "/run"]
        for name in ROOT_DIRS:
            path = "/" + name
            if os.path.islink(path):
                a += ["--symlink", os.readlink(path), path]
            elif os.path.isdir(path):
                a += ["--ro-bind", path, path]
        for name in ETC_FILES:
            if os.path.lexists("/etc/" + name):
                a += ["--ro-bind", "/etc/" + name, "/etc/" + name]
        a += ["--ro-bind-data", str(fds["passwd"]), "/etc/passwd", "--ro-bind-data", str(fds["group"]), "/etc/group",
              "--ro-bind-data", str(fds["hosts"]), "/etc/hosts"]
        for src, dest in self._extra_binds:
            a += ["--ro-bind", src, dest]
        a += ["--proc", "/proc", "--dev", "/dev",
              "--size", str(lim.tmp_mb << 20), "--perms", "1777", "--tmpfs", "/dev/shm",
              "--size", str(lim.tmp_mb << 20), "--perms", "1777", "--tmpfs", "/tmp",
              "--size", str(lim.workspace_mb << 20), "--perms", "0755", "--tmpfs", WORKSPACE,
              "--size", str(8 << 20), "--perms", "0700", "--tmpfs", STATE_DIR,
              "--ro-bind-data", str(fds["runner"]), RUNNER_PATH,
              "--remount-ro", "/dev", "--remount-ro", "/",
              "--chdir", WORKSPACE, "--",
              self.python, "-I", "-S", "-B", RUNNER_PATH, json.dumps(runner_config)]
        return a

    async def launch(self, slot: int, runner_config: dict) -> SandboxProcess:
        cfg = dict(runner_config, workspace=WORKSPACE, alias=WORKSPACE, state_dir=STATE_DIR, bash="/bin/bash")
        env_path = "/usr/local/bin:/usr/bin:/bin"
        for src, dest in self._extra_binds:
            if os.path.isdir(os.path.join(src, "bin")) and dest == self._python_prefix(self.python):
                env_path = os.path.join(dest, "bin") + ":" + env_path
        cfg.setdefault("env", self.base_env(WORKSPACE))["PATH"] = env_path
        fds: dict[str, int] = {}
        try:
            fds["runner"] = _memfd("runner", self._runner_source)
            fds["passwd"] = _memfd("passwd", PASSWD.encode())
            fds["group"] = _memfd("group", GROUP.encode())
            fds["hosts"] = _memfd("hosts", HOSTS.encode())
            uid = self.host_uid(slot)
            ids = dict(user=uid, group=uid, extra_groups=[]) if uid is not None else {}
            proc = await Process.start(self.argv(cfg, fds), pass_fds=list(fds.values()), cwd="/",
                                       env={"PATH": env_path, "LANG": "C.UTF-8"}, **ids)
        finally:
            for fd in fds.values():
                os.close(fd)
        sp = SandboxProcess(proc=proc, host_uid=uid, inner_init=True)
        sp.start_stderr_reader()
        return sp


class NoIsolation(Isolation):
    """INSECURE: the runner as a plain subprocess of the server, in a temporary directory. Only rlimits
    and the deadline apply; commands see the host's files, network and processes."""

    name = "none"
    needs_shutdown_op = True

    def check(self) -> None:
        if not os.path.exists(self.config.python):
            raise IsolationUnavailable(f"the sandbox Python {self.config.python} does not exist: pass --python PATH")

    async def launch(self, slot: int, runner_config: dict) -> SandboxProcess:
        root = tempfile.mkdtemp(prefix="parkrl-sandbox-")
        workspace, state = os.path.join(root, "workspace"), os.path.join(root, "state")
        os.makedirs(workspace)
        os.makedirs(state)
        cfg = dict(runner_config, workspace=workspace, alias=WORKSPACE, state_dir=state)
        cfg.setdefault("env", self.base_env(workspace))
        cfg["env"]["HOME"] = workspace
        cfg["env"]["TMPDIR"] = workspace
        try:
            proc = await Process.start([self.config.python, "-I", "-S", "-B", RUNNER_SOURCE_PATH, json.dumps(cfg)],
                                       cwd=workspace, env={"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"},
                                       start_new_session=True)
        except BaseException:
            shutil.rmtree(root, ignore_errors=True)
            raise
        sp = SandboxProcess(proc=proc, cleanup=lambda: shutil.rmtree(root, ignore_errors=True))
        sp.start_stderr_reader()
        return sp


def make_isolation(config: ServerConfig) -> Isolation:
    """The isolation `config.isolation` names ("bwrap" or "none")."""
    if config.isolation == "none":
        return NoIsolation(config)
    if config.isolation == "bwrap":
        return BwrapIsolation(config)
    raise ValueError(f"unknown isolation {config.isolation!r} (bwrap | none)")


def explain_start_failure(stderr: str) -> str:
    """Turn bwrap's complaint into a message that names the cause and the fix."""
    text = stderr.strip()
    low = text.lower()
    if any(s in low for s in ("no permissions to create", "creating new namespace", "uid map", "setting up uid",
                              "operation not permitted", "clone", "unshare")):
        return (f"bubblewrap cannot create the sandbox's namespaces here (user namespaces forbidden?): {text!r}. "
                f"Fix: {USERNS_HINT}. ({BYPASS_HINT})")
    return f"bubblewrap failed to start a sandbox: {text!r}. ({BYPASS_HINT})"


__all__ = [
    "BwrapIsolation",
    "Isolation",
    "IsolationUnavailable",
    "NoIsolation",
    "SandboxProcess",
    "explain_start_failure",
    "make_isolation",
]
