"""The in-sandbox runner: a small stdlib-only program that is the init process of one sandbox.

It is not imported by the server: the server hands this file's source to the sandbox's Python
(``python3 -I -S runner.py CONFIG_JSON``). It speaks a framed protocol on its stdin/stdout: each
frame is a 4-byte big-endian length followed by that many bytes of UTF-8 JSON. The first frame it
writes is ``{"ready": true, ...}``; then it answers one request frame with one response frame.

Requests (``op``):
- ``exec``  {command, timeout, cap, stdin_b64?, limits?}
            -> {exit_code, stdout, stderr, timed_out, truncated, duration_s}
- ``write`` {path, data_b64}                          -> {path, bytes}
- ``read``  {path, max_bytes}                         -> {path, data_b64}
- ``shutdown``                                        -> kills every process it started, answers, exits
Errors answer ``{"ok": false, "kind": <escape|missing|too_big|isdir|nospace|invalid|internal>, "error": msg}``.

Commands run in one persistent ``bash`` per session (started by the runner, rlimits set once with
``ulimit``), fed through a control pipe: the runner writes the command to a file and "SEQ FIFO
FLAGS" to the pipe; the shell runs it in itself (``eval``, so cwd, variables and functions simply
persist) with stdin from /dev/null (or a FIFO with the request's stdin), stdout/stderr on two FIFOs
the runner reads (capped), and its control/status pipes closed; then it saves its state (exported
variables, functions, cwd) to a state file and writes "SEQ STATUS" to the status pipe. Background
processes never block on, nor leak into, a later command's output: a FIFO pair that still has a
writer after its command is drained by the runner until EOF and never handed out again.

On the deadline every process the command started (every descendant of the runner started after
the command, daemons included: the runner is PID 1 of the sandbox's PID namespace or a child
subreaper) is killed with SIGKILL, and so is the shell (the command may be a builtin loop in it).
A shell that is gone (killed, ``exit``, ``exec``, a command that changed shell options, or one
near its RLIMIT_CPU) is replaced by a fresh one restoring the last saved state; so after a
timeout the session is as it was before the command. Plain (unexported) variables, aliases, traps
and options last only as long as one shell. A command with other rlimits than the session's
(/run_code's memory limit) runs in a subshell that sets them.
"""
import base64
import fcntl
import json
import os
import select
import shlex
import signal
import struct
import sys
import time

CFG = json.loads(sys.argv[1])
WORKSPACE = CFG["workspace"]              # where the workspace really is (for the runner)
ALIAS = CFG.get("alias", WORKSPACE)       # how clients name it (/workspace)
STATE = CFG["state_dir"]                  # hidden shell state, outside the workspace
BASH = CFG.get("bash", "/bin/bash")
LIMITS = CFG.get("limits", {})
MB = 1 << 20
CLK_TCK = os.sysconf("SC_CLK_TCK")
FIONREAD = 0x541B  # termios.FIONREAD on Linux

_linger = []  # read ends of earlier commands' pipes still held by their background processes
MAX_LINGER = 256


def _prctl(option, value):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0)
    except Exception:
        pass


def _read_exact(fd, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _send(fd, obj):
    data = json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")
    view = memoryview(struct.pack(">I", len(data)) + data)
    while view:
        view = view[os.write(fd, view):]


def _ulimits(limits):
    """A bash line setting rlimits with builtins (no extra process); it fails (and says so on stderr,
    exit 126) if any limit cannot be set."""
    flags = []
    if limits.get("cpu_s"):  # SIGXCPU at the soft limit, SIGKILL a second later at the hard one
        cpu = int(limits["cpu_s"])
        flags.append(f"builtin ulimit -S -t {cpu} && builtin ulimit -H -t {cpu + 1}")
    for key, flag, scale in (("memory_mb", "-v", 1024), ("max_processes", "-u", 1), ("file_mb", "-f", 1024),
                             ("max_open_files", "-n", 1)):
        if limits.get(key):
            flags.append(f"builtin ulimit {flag} {int(limits[key]) * scale}")
    flags.append("builtin ulimit -c 0")
    return ("{ " + " && ".join(flags) + "; } 2>/dev/null || { builtin echo 'sandbox: cannot set resource limits' >&2; "
            "builtin exit 126; }")


SIGDEF = (signal.SIGPIPE, signal.SIGINT, signal.SIGXFSZ, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD)
CTL_FD, STATUS_FD = 5, 6  # the shell's control pipe (commands in) and status pipe (results out)


def _proc_table():
    """{pid: (ppid, starttime, state)} of every visible process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                data = f.read()
        except OSError:
            continue
        rest = data[data.rfind(b")") + 2:].split()
        try:
            table[int(name)] = (int(rest[1]), int(rest[19]), rest[0].decode())
        except (IndexError, ValueError):
            continue
    return table


def _descendants():
    """{pid: (starttime, state)} of every descendant of this runner (all of the PID namespace when init)."""
    me = os.getpid()
    table = _proc_table()
    children = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, stack = {}, list(children.get(me, []))
    while stack:
        pid = stack.pop()
        if pid in out or pid == me:
            continue
        out[pid] = (table[pid][1], table[pid][2])
        stack.extend(children.get(pid, []))
    return out


def _reap():
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if SHELL is not None and pid == SHELL.pid:
            SHELL.status = status


def _tick():
    """Now, in the clock ticks of /proc/PID/stat's start times (CLOCK_BOOTTIME, floored)."""
    return time.clock_gettime_ns(time.CLOCK_BOOTTIME) // (1_000_000_000 // CLK_TCK)


def _mark():
    """A mark that tells the processes alive now from any started later, without a scan of /proc:
    (t0, last_pid, t1), the tick before, the PID namespace's last allocated pid, the tick after.
    A process is older than the mark iff it started before tick t0, or by tick t1 with a pid
    <= last_pid: pids only grow until they wrap at pid_max, and a wrap takes tens of thousands of
    forks, not one tick's worth. Where ns_last_pid cannot be read: a snapshot {pid: starttime}."""
    t0 = _tick()
    try:
        if _last_pid_fd[0] is None:
            _last_pid_fd[0] = os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY)
        last = int(os.pread(_last_pid_fd[0], 32, 0))
    except (OSError, ValueError):
        return {pid: start for pid, (start, _) in _descendants().items()}
    return (t0, last, _tick())


_last_pid_fd = [None]


def _older(mark, pid, start):
    if isinstance(mark, dict):
        return mark.get(pid) == start
    t0, last, t1 = mark
    return start < t0 or (start <= t1 and pid <= last)


def _kill_new(mark, extra=()):
    """SIGKILL every descendant started after `mark` (all of them if None), and those in `extra`,
    until none is left (bounded)."""
    end = time.monotonic() + 5.0
    while True:
        victims = [pid for pid, (start, state) in _descendants().items()
                   if state != "Z" and (mark is None or pid in extra or not _older(mark, pid, start))]
        if not victims:
            return True
        for pid in victims:
            try:
                os.kill(pid, signal.SIGSTOP)  # stopped processes cannot fork while we go round
            except OSError:
                pass
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        _reap()
        if time.monotonic() > end:
            return False
        time.sleep(0.002)


def _shell_script():
    """The persistent shell's program, all on line 1 (so bash's "line N" in messages counts the
    command's own lines). It restores the saved state, then loops: read "SEQ FIFO FLAGS" from the
    control pipe (FLAGS: i = stdin from FIFO i.SEQ, l = run in a subshell with the rlimits in lim)
    and the command from the cmd file, run it in the shell itself with stdout/stderr on FIFOs
    o.FIFO/e.FIFO and the control/status pipes closed, then save the state (exported variables,
    functions, cwd) to state.new and write "SEQ STATUS [R]" to the status pipe. R: the command changed shell
    options, so this shell exits and the next command gets a fresh one (options, traps and plain
    variables do not outlive a shell; exported variables, functions and cwd do). A command's
    ``break``/``continue`` at top level only ends that command (the loops are nested for that). Every
    command of the wrapper is a keyword or a ``builtin``, so user functions named like commands do
    not change it."""
    st = shlex.quote(STATE)
    ws = shlex.quote(WORKSPACE)
    save = ("{ builtin export -p; builtin declare -f; builtin printf 'builtin cd -- %q 2>/dev/null || builtin cd -- "
            "%q\\n' \"$PWD\" " + ws + "; } >| " + st + "/state.new")  # the shell's own stderr is /dev/null
    post = ("__parkrl_q=\"$-$SHELLOPTS$BASHOPTS\"; builtin set +eu; __parkrl_p=; builtin disown -a; " + save + "; "
            "if [[ $__parkrl_q == \"$__parkrl_o\" ]]; then "
            f"builtin printf '%s %s\\n' \"$__parkrl_n\" \"$__parkrl_r\" >&{STATUS_FD}; else builtin trap - EXIT; "
            f"builtin printf '%s %s R\\n' \"$__parkrl_n\" \"$__parkrl_r\" >&{STATUS_FD}; builtin exit 0; fi")
    io = (f"<\"$__parkrl_i\" >{st}/o.$__parkrl_k 2>{st}/e.$__parkrl_k {CTL_FD}<&- {STATUS_FD}>&-")
    return (
        "__parkrl_bad=; " + _ulimits(LIMITS).replace("builtin exit 126", "__parkrl_bad=1") + "; "
        "if [[ -r " + st + "/state ]]; then builtin source " + st + "/state; else builtin cd -- " + ws + "; fi; "
        "__parkrl_o=\"$-$SHELLOPTS$BASHOPTS\"; __parkrl_p=; __parkrl_save=" + shlex.quote(save) + "; "
        "while builtin :; do while builtin :; do "
        "__parkrl_r=$?; if [[ -n $__parkrl_p ]]; then " + post + "; fi; "
        f"IFS=' ' builtin read -r -u {CTL_FD} __parkrl_n __parkrl_k __parkrl_f || builtin exit 0; "
        "__parkrl_c=; IFS= builtin read -r -d '' __parkrl_c < " + st + "/cmd; "
        "builtin trap \"$__parkrl_save\" EXIT; builtin trap - DEBUG ERR RETURN; "
        "if [[ $__parkrl_f == *i* ]]; then __parkrl_i=" + st + "/i.$__parkrl_n; else __parkrl_i=/dev/null; fi; "
        "__parkrl_p=1; "
        "if [[ -n $__parkrl_bad ]]; then { builtin echo 'sandbox: cannot set resource limits' >&2; "
        "( builtin exit 126 ); } " + io + "; "
        "elif [[ $__parkrl_f == *l* ]]; then __parkrl_l=; IFS= builtin read -r -d '' __parkrl_l < " + st + "/lim; "
        "( builtin eval -- \"$__parkrl_l\" && builtin eval -- \"$__parkrl_c\" ) " + io + "; "
        "else { builtin eval -- \"$__parkrl_c\"; } " + io + "; fi; "
        "__parkrl_r=$?; " + post + "; "
        "done; done\n")


class Shell:
    """The session's persistent bash (a child of the runner, in a session of its own)."""

    def __init__(self):
        self.pid = None
        self.status = None   # its wait status once reaped
        self.ctl_w = self.status_r = self.pidfd = None
        self.buf = b""
        self.busy_s = 0.0    # wall time it spent on commands: an upper bound of its CPU time

    def start(self):
        devnull = os.open(os.devnull, os.O_RDWR)
        ctl_r, ctl_w = os.pipe()
        status_r, status_w = os.pipe()
        try:
            # sources above the target fds, so every dup2 really dups (and clears close-on-exec)
            hi = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (devnull, ctl_r, status_w)]
            try:
                argv = [BASH, "--noprofile", "--norc", "-c", SCRIPT, "bash"]
                self.pid = os.posix_spawn(
                    argv[0], argv, {}, setsid=True, setsigdef=SIGDEF, setsigmask=(),
                    file_actions=[(os.POSIX_SPAWN_DUP2, hi[0], 0), (os.POSIX_SPAWN_DUP2, hi[0], 1),
                                  (os.POSIX_SPAWN_DUP2, hi[0], 2), (os.POSIX_SPAWN_DUP2, hi[1], CTL_FD),
                                  (os.POSIX_SPAWN_DUP2, hi[2], STATUS_FD)])
            finally:
                for fd in hi:
                    os.close(fd)
        except BaseException:
            for fd in (ctl_w, status_r):
                os.close(fd)
            raise
        finally:
            for fd in (devnull, ctl_r, status_w):
                os.close(fd)
        self.ctl_w, self.status_r = ctl_w, status_r
        os.set_blocking(ctl_w, False)
        os.set_blocking(status_r, False)
        try:
            self.pidfd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):
            self.pidfd = None
        self.status, self.buf, self.busy_s = None, b"", 0.0

    def alive(self):
        if self.pid is None or self.status is not None:
            return False
        try:
            wpid, st = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return False
        if wpid == self.pid:
            self.status = st
            return False
        return True

    def wait(self):
        """Its wait status (it has exited or been killed)."""
        if self.status is None:
            try:
                self.status = os.waitpid(self.pid, 0)[1]
            except ChildProcessError:
                self.status = 0
        return self.status

    def cpu_s(self):
        try:
            with open(f"/proc/{self.pid}/stat", "rb") as f:
                data = f.read()
            rest = data[data.rfind(b")") + 2:].split()
            return (int(rest[11]) + int(rest[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            return 0.0

    def kill(self):
        if self.pid is not None and self.status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
            self.wait()
        self.close()

    def close(self):
        for name in ("ctl_w", "status_r", "pidfd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        self.pid = None

    def read_status(self, seq):
        """(status, restart) once the line for command `seq` has come, else None. Only the tail of
        what the pipe holds is kept (anything else writing there is junk)."""
        try:
            chunk = os.read(self.status_r, 4096)
        except BlockingIOError:
            return None
        if not chunk:
            return None
        self.buf = (self.buf + chunk)[-4096:]
        found = None
        *lines, self.buf = self.buf.split(b"\n")
        for line in lines:
            parts = line.split()
            if len(parts) in (2, 3) and parts[0] == str(seq).encode() and parts[1].isdigit() \
                    and (len(parts) == 2 or parts[2] == b"R"):
                found = (int(parts[1]), len(parts) == 3)
        return found


def _write_initial_state():
    os.makedirs(STATE, exist_ok=True)
    lines = [f"builtin export {k}={shlex.quote(v)}" for k, v in CFG.get("env", {}).items()]
    lines.append(f"builtin cd -- {shlex.quote(WORKSPACE)}")
    with open(os.path.join(STATE, "state"), "w") as f:
        f.write("\n".join(lines) + "\n")


def _discard(ready):
    """Read and drop what background processes of earlier commands wrote (so they never block on a
    full pipe or die of SIGPIPE); forget a pipe at EOF."""
    for fd in ready:
        try:
            if os.read(fd, 1 << 16):
                continue
        except BlockingIOError:
            continue
        except OSError:
            pass
        _linger.remove(fd)
        os.close(fd)


def _decode(data):
    return data.decode("utf-8", "replace")


SHELL = None
_seq = [0]


def _fifo(name):
    path = STATE + "/" + name
    try:
        os.mkfifo(path, 0o600)
    except FileExistsError:  # only if a command put something there
        os.unlink(path)
        os.mkfifo(path, 0o600)
    return path


def _unread(fd):
    """Bytes in the pipe `fd` that nobody has read yet."""
    try:
        return struct.unpack("i", fcntl.ioctl(fd, FIONREAD, b"\0\0\0\0"))[0]
    except OSError:
        return 0


def _unlink(*paths):
    for path in paths:
        try:
            os.unlink(path)
        except OSError:
            pass


def _shell_for(timeout):
    """The live shell, (re)started when gone or when its CPU time (RLIMIT_CPU counts over its whole
    life) might not cover a command of `timeout` seconds."""
    global SHELL
    sh = SHELL
    if sh is not None and sh.alive():
        cpu_limit = LIMITS.get("cpu_s")
        if not cpu_limit or sh.busy_s + timeout + 1 < cpu_limit:
            return sh
        used = sh.cpu_s()
        if used < 0.5 or used + timeout + 1 < cpu_limit:
            sh.busy_s = used
            return sh
    if sh is not None:
        sh.kill()
    _reap()
    sh = SHELL = Shell()
    sh.start()
    return sh


def _output_fifos(seq):
    """(id, stdout read end, stderr read end) for a command: the previous command's pair when its
    writers are all gone (the usual case), else a new pair named by `seq`."""
    if _idle_fifos:
        return _idle_fifos.pop()
    out_path, err_path = _fifo(f"o.{seq}"), _fifo(f"e.{seq}")
    fds = []
    try:
        fds.append(os.open(out_path, os.O_RDONLY | os.O_NONBLOCK))
        fds.append(os.open(err_path, os.O_RDONLY | os.O_NONBLOCK))
    except BaseException:
        for fd in fds:
            os.close(fd)
        _unlink(out_path, err_path)
        raise
    return seq, fds[0], fds[1]


_idle_fifos = []  # at most one (id, out_r, err_r) whose writers have all gone (EOF on both)


def op_exec(req):
    timeout = float(req.get("timeout", 10))
    cap = int(req.get("cap", 65536))
    flags = ""
    if req.get("limits"):
        limits = dict(LIMITS)
        limits.update(req["limits"])
        if limits != LIMITS:  # other rlimits for this command: it runs in a subshell that sets them
            flags += "l"
            with open(os.path.join(STATE, "lim"), "w") as f:
                f.write(_ulimits(limits))
    stdin_data = base64.b64decode(req["stdin_b64"]) if req.get("stdin_b64") else b""
    sh = _shell_for(timeout)
    _seq[0] += 1
    seq = _seq[0]
    fd = os.open(STATE + "/cmd", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:  # a file, not the pipe: bash reads pipes a byte at a time
        view = memoryview(req["command"].encode("utf-8", "surrogateescape"))
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    while True:
        fid, out_r, err_r = _output_fifos(seq)
        out_path, err_path = f"{STATE}/o.{fid}", f"{STATE}/e.{fid}"
        holders, in_w, in_path = [], None, None
        try:
            # our own write ends: no EOF before the command's end, whenever the shell opens its ends
            holders.append(os.open(out_path, os.O_WRONLY | os.O_NONBLOCK))
            holders.append(os.open(err_path, os.O_WRONLY | os.O_NONBLOCK))
            if fid == seq or all(os.fstat(a).st_ino == os.fstat(b).st_ino for a, b in zip(holders, (out_r, err_r))):
                break
            raise FileNotFoundError
        except OSError:  # a command removed or replaced the idle pair: drop it, make a new one
            for fd in holders + [out_r, err_r]:
                os.close(fd)
            _unlink(out_path, err_path)
            if fid == seq:
                raise
    open_fds = [out_r, err_r]  # not at EOF yet
    try:
        if stdin_data:
            flags += "i"
            in_path = _fifo(f"i.{seq}")
            in_w = os.open(in_path, os.O_RDWR | os.O_NONBLOCK)  # RDWR: opens without a reader yet
        mark = _mark()
        t0 = time.monotonic()
        try:
            os.write(sh.ctl_w, f"{seq} {fid} {flags or '-'}\n".encode())
        except OSError:  # died just now (or its control pipe is stuck): the status says how
            pass
        bufs = {out_r: bytearray(), err_r: bytearray()}
        seen = {out_r: 0, err_r: 0}
        pending = memoryview(stdin_data)
        deadline = t0 + timeout
        exit_code, timed_out, restart, died = None, False, False, False

        def pump(fd):
            try:
                chunk = os.read(fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                open_fds.remove(fd)
                return
            seen[fd] += len(chunk)
            room = cap - len(bufs[fd])
            if room > 0:
                bufs[fd] += chunk[:room]

        poll_s = 0.001
        while True:
            now = time.monotonic()
            if now >= deadline:
                timed_out = True
                break
            rlist = open_fds + [sh.status_r] + _linger + ([sh.pidfd] if sh.pidfd is not None else [])
            wlist = [in_w] if in_w is not None and pending else []
            if in_w is not None and not pending:  # waiting for the command to read it all: poll, backing off
                wait = min(deadline - now, poll_s)
                poll_s = min(poll_s * 2, 0.05)
            else:
                wait = deadline - now if sh.pidfd is not None else min(deadline - now, 0.01)
            r, w, _ = select.select(rlist, wlist, [], wait)
            for fd in r:
                if fd in open_fds:
                    pump(fd)
            _discard([fd for fd in r if fd in _linger])
            if w:
                try:
                    n = os.write(in_w, pending[:1 << 16])
                    pending = pending[n:]
                except BlockingIOError:
                    pass
                except OSError:
                    pending = pending[:0]
            if in_w is not None and not pending and not _unread(in_w):
                # all written and read: close for EOF (not before the command opened it: that would
                # drop what the FIFO holds)
                os.close(in_w)
                in_w = None
            if sh.status_r in r:
                status = sh.read_status(seq)
                if status is not None:
                    exit_code, restart = status
                    break
            if (sh.pidfd is None or sh.pidfd in r) and not sh.alive():
                died = True
                break
        duration = time.monotonic() - t0
        if timed_out:
            _kill_new(mark, extra=(sh.pid,))  # the shell too: it may be the one running the command
            sh.kill()
        elif died:
            exit_code = os.waitstatus_to_exitcode(sh.wait())
            if exit_code < 0:  # killed by a signal: report it as a shell would
                exit_code = 128 - exit_code
            sh.kill()
        elif restart:
            sh.kill()  # it is on its way out: its options changed
        sh.busy_s += duration
        while holders:
            os.close(holders.pop())
        # What is in the pipes now; a background process still holding them must not keep us waiting.
        drain_end = time.monotonic() + 1.0
        while open_fds and time.monotonic() < drain_end:
            r, _, _ = select.select(open_fds, [], [], 0)
            if not r:
                break
            for fd in r:
                pump(fd)
    finally:
        for fd in holders + ([in_w] if in_w is not None else []):
            os.close(fd)
        if in_path:
            _unlink(in_path)
        if not open_fds and not _idle_fifos:
            _idle_fifos.append((fid, out_r, err_r))  # no writer left: the next command reuses them
        else:
            for fd in (out_r, err_r):
                if fd in open_fds:
                    _linger.append(fd)  # still held by something the command left running
                else:
                    os.close(fd)
            _unlink(out_path, err_path)
            while len(_linger) > MAX_LINGER:
                os.close(_linger.pop(0))
    _reap()
    state_new = STATE + "/state.new"
    try:
        if timed_out:
            os.unlink(state_new)
        else:
            os.replace(state_new, STATE + "/state")
    except OSError:
        pass
    return {"exit_code": None if timed_out else exit_code, "stdout": _decode(bytes(bufs[out_r])),
            "stderr": _decode(bytes(bufs[err_r])), "timed_out": timed_out,
            "truncated": seen[out_r] > cap or seen[err_r] > cap, "duration_s": round(duration, 6)}


class OpError(Exception):
    def __init__(self, kind, message):
        super().__init__(message)
        self.kind = kind


def _within(path, root):
    return path == root or path.startswith(root.rstrip("/") + "/")


def _resolve(path):
    """The real path of a workspace path; refuses anything that leaves the workspace."""
    if not isinstance(path, str) or not path or "\0" in path:
        raise OpError("invalid", "path must be a non-empty string without NUL bytes")
    if path.startswith("/"):
        full = os.path.normpath(path)
        if _within(full, ALIAS):
            full = WORKSPACE + full[len(ALIAS):]
        elif not _within(full, WORKSPACE):
            raise OpError("escape", f"path {path!r} is outside the workspace {ALIAS}")
    else:
        full = os.path.normpath(os.path.join(WORKSPACE, path))
    if not _within(full, WORKSPACE):
        raise OpError("escape", f"path {path!r} leaves the workspace {ALIAS}")
    real = os.path.realpath(full)
    if not _within(real, os.path.realpath(WORKSPACE)):
        raise OpError("escape", f"path {path!r} resolves (through a symlink) outside the workspace {ALIAS}")
    return real


def op_write(req):
    real = _resolve(req["path"])
    if os.path.isdir(real):
        raise OpError("isdir", f"{req['path']!r} is a directory")
    data = base64.b64decode(req.get("data_b64", ""))
    try:
        os.makedirs(os.path.dirname(real), exist_ok=True)
        fd = os.open(real, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
        finally:
            os.close(fd)
    except OSError as e:
        if e.errno == 28:  # ENOSPC
            raise OpError("nospace", f"the workspace is full writing {req['path']!r}") from None
        raise OpError("invalid", f"cannot write {req['path']!r}: {e.strerror}") from None
    return {"path": req["path"], "bytes": len(data)}


def op_read(req):
    real = _resolve(req["path"])
    max_bytes = int(req.get("max_bytes", 16 * MB))
    try:
        st = os.stat(real)
    except FileNotFoundError:
        raise OpError("missing", f"no file {req['path']!r} in the workspace") from None
    except OSError as e:
        raise OpError("invalid", f"cannot read {req['path']!r}: {e.strerror}") from None
    if os.path.isdir(real):
        raise OpError("isdir", f"{req['path']!r} is a directory")
    if st.st_size > max_bytes:
        raise OpError("too_big", f"{req['path']!r} has {st.st_size} bytes, more than the {max_bytes} allowed")
    try:
        with open(real, "rb") as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise OpError("invalid", f"cannot read {req['path']!r}: {e.strerror}") from None
    if len(data) > max_bytes:
        raise OpError("too_big", f"{req['path']!r} is larger than the {max_bytes} bytes allowed")
    return {"path": req["path"], "data_b64": base64.b64encode(data).decode()}


def main():
    proto_in, proto_out = os.dup(0), os.dup(1)  # the protocol; nothing else may write to it
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(2, 1)
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as PID 1, a default disposition means: ignored
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    _prctl(4, 0)    # PR_SET_DUMPABLE 0: commands (same uid) cannot ptrace us or open /proc/1/fd
    _prctl(36, 1)   # PR_SET_CHILD_SUBREAPER: orphans (daemons) come back to us
    if CFG.get("nice"):
        try:
            os.nice(int(CFG["nice"]))
        except OSError:
            pass
    _write_initial_state()
    try:
        _shell_for(0)  # ready before the first command
    except OSError:
        pass  # the first exec tries again and reports why
    _send(proto_out, {"ready": True, "pid": os.getpid(), "python": sys.version.split()[0]})
    ops = {"exec": op_exec, "write": op_write, "read": op_read}
    while True:
        r, _, _ = select.select([proto_in] + _linger, [], [], 0.5)
        _reap()
        _discard([fd for fd in r if fd != proto_in])
        if proto_in not in r:
            continue
        try:
            (n,) = struct.unpack(">I", _read_exact(proto_in, 4))
            req = json.loads(_read_exact(proto_in, n))
        except EOFError:
            break
        op = req.get("op")
        if op == "shutdown":
            _kill_new(None)
            _send(proto_out, {"ok": True})
            break
        try:
            if op not in ops:
                raise OpError("invalid", f"unknown op {op!r}")
            resp = ops[op](req)
            resp["ok"] = True
        except OpError as e:
            resp = {"ok": False, "kind": e.kind, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - answer instead of dying
            resp = {"ok": False, "kind": "internal", "error": f"{type(e).__name__}: {e}"}
        _send(proto_out, resp)
    _kill_new(None)


SCRIPT = _shell_script()

if __name__ == "__main__":
    main()
