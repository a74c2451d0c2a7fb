"""The sandbox server (parkrl/sandbox/), end to end: a real server subprocess on 127.0.0.1 talked to
over HTTP with the client. Needs bubblewrap (apt-get install -y bubblewrap) and root (per-sandbox uids)."""
from __future__ import annotations

import asyncio
import base64
import os
import random
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import psutil
import pytest

from parkrl.sandbox.client import AsyncSandboxClient, SandboxBusy, SandboxClient, SandboxError, SandboxNotFound

REPO = Path(__file__).resolve().parent.parent
TOKEN = "test-token-" + os.urandom(8).hex()
MAX_PROCESSES = 64
OUTPUT_CAP = 65536

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None or os.geteuid() != 0,
                                reason="needs bubblewrap and root (per-sandbox host uids)")


class Server:
    """A sandbox server subprocess; its log goes to a file (read with .log())."""

    def __init__(self, *args: str, token: str | None = TOKEN, env: dict | None = None, wait: bool = True):
        self.uid_base = 2_000_000_000 + random.randrange(1, 100_000) * 1000  # < 2**31: bwrap takes signed ids
        self.log_path = tempfile.mktemp(prefix="parkrl-sandbox-test-", suffix=".log")
        full_env = {k: v for k, v in os.environ.items() if k != "PARKRL_SANDBOX_TOKEN"}
        if token:
            full_env["PARKRL_SANDBOX_TOKEN"] = token
        full_env.update(env or {})
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "parkrl.sandbox.server", "--host", "127.0.0.1", "--port", "0",
                 "--uid-base", str(self.uid_base), *args],
                cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.url = None
        if wait:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", self.log())
                if m:
                    self.url = m.group(1)
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(f"sandbox server exited {self.proc.returncode}:\n{self.log()}")
                time.sleep(0.05)
            else:
                self.stop()
                raise RuntimeError(f"sandbox server did not start:\n{self.log()}")

    def log(self) -> str:
        return Path(self.log_path).read_text(errors="replace")

    def client(self, token: str | None = TOKEN, timeout_s: float = 60) -> SandboxClient:
        return SandboxClient(self.url, token, timeout_s=timeout_s)

    def sandbox_procs(self) -> list[psutil.Process]:
        """Host processes running as one of this server's sandbox uids."""
        out = []
        for p in psutil.process_iter(["uids"]):
            uids = p.info.get("uids")
            if uids and self.uid_base <= uids.real < self.uid_base + 10_000:
                out.append(p)
        return out

    def procs_running(self, *args: str) -> list[psutil.Process]:
        """This server's sandbox processes (zombies aside) whose command line is `args`."""
        out = []
        for p in self.sandbox_procs():
            try:
                if p.status() != psutil.STATUS_ZOMBIE and p.cmdline() == list(args):
                    out.append(p)
            except psutil.Error:
                pass
        return out

    def wait(self, timeout: float = 30) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def cleanup(self) -> None:
        self.stop()
        if os.path.exists(self.log_path):
            os.unlink(self.log_path)


def safe_cmdline(p: psutil.Process) -> list[str]:
    try:
        return p.cmdline()
    except psutil.Error:
        return []


def wait_until(pred, timeout: float = 5.0, interval: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


@pytest.fixture(scope="module")
def server():
    srv = Server("--max-sessions", "72", "--max-processes", str(MAX_PROCESSES), "--memory-mb", "512",
                 "--workspace-mb", "64", "--tmp-mb", "16", "--max-timeout-s", "30", "--max-file-mb", "1",
                 "--output-cap-bytes", str(OUTPUT_CAP))
    yield srv
    srv.stop()
    # uvicorn re-raises SIGTERM after its graceful shutdown
    log = srv.log()
    assert srv.proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in log, log[-3000:]
    assert wait_until(lambda: not srv.sandbox_procs(), 5), f"stray sandbox processes: {srv.sandbox_procs()}"
    srv.cleanup()


@pytest.fixture(scope="module")
def small_server():
    srv = Server("--max-sessions", "2", "--idle-timeout-s", "60", "--max-timeout-s", "10")
    yield srv
    srv.stop()
    assert wait_until(lambda: not srv.sandbox_procs(), 5)
    srv.cleanup()


@pytest.fixture()
def client(server):
    with server.client() as c:
        yield c


@contextmanager
def session(c: SandboxClient, **kw):
    sid = c.create_session(**kw)
    try:
        yield sid
    finally:
        try:
            c.close_session(sid)
        except SandboxNotFound:
            pass


# ---------------------------------------------------------------------------------------- API

def test_auth_required_everywhere_but_healthz(server):
    with httpx.Client(base_url=server.url, timeout=10) as http:
        assert http.get("/healthz").json() == {"status": "ok", "sessions": 0, "isolation": "bwrap"}
        for method, path, body in (("POST", "/v1/sessions", {}), ("GET", "/metrics", None),
                                   ("POST", "/v1/sessions/x/exec", {"command": "true"}),
                                   ("POST", "/run_code", {"code": "print(1)", "language": "python"})):
            missing = http.request(method, path, json=body)
            wrong = http.request(method, path, json=body, headers={"Authorization": "Bearer not-the-token"})
            assert missing.status_code == 401 and wrong.status_code == 401, (path, missing.text, wrong.text)
            assert "token" in wrong.json()["detail"] and TOKEN not in wrong.text
        assert http.post("/v1/sessions", json={}, headers={"Authorization": "Basic " + TOKEN}).status_code == 401
    with server.client(token="wrong") as bad, pytest.raises(SandboxError) as e:
        bad.create_session()
    assert e.value.status == 401 and server.url in str(e.value)
    assert TOKEN not in server.log()  # never logged


def test_state_carries_across_calls(client):
    with session(client) as sid:
        r = client.exec(sid, "mkdir -p proj/src && cd proj/src && export GREETING='hi there' && "
                             "greet() { echo \"$GREETING from $(pwd)\"; } && echo made > notes.txt && "
                             "echo out; echo err >&2")
        assert (r.exit_code, r.stdout, r.stderr, r.timed_out, r.truncated) == (0, "out\n", "err\n", False, False)
        r = client.exec(sid, "pwd; echo $GREETING; greet; cat notes.txt")
        assert r.stdout == "/workspace/proj/src\nhi there\nhi there from /workspace/proj/src\nmade\n", r
        assert client.exec(sid, "unset GREETING; cd ..; exit 7").exit_code == 7
        assert client.exec(sid, "echo \"[$GREETING]\"; pwd").stdout == "[]\n/workspace/proj\n"
        assert client.read_file(sid, "proj/src/notes.txt") == b"made\n"
        # whoami etc. look like a normal unprivileged account
        assert client.exec(sid, "id -un; echo $HOME").stdout == "sandbox\n/workspace\n"
        r = client.exec(sid, "echo first\nno_such_cmd\n-n")  # line numbers are the command's own
        assert r.stderr == "bash: line 2: no_such_cmd: command not found\nbash: line 3: -n: command not found\n"
        assert client.exec(sid, "echo " + "x" * 300_000 + " | wc -c").stdout == "300001\n"  # > 128 KiB argv cap


def test_files_roundtrip_and_escapes(client):
    with session(client) as sid:
        assert client.write_file(sid, "dir/sub/data.bin", b"\x00\x01binary") == 8
        assert client.exec(sid, "od -An -c dir/sub/data.bin | tr -s ' '").stdout.strip() == "\\0 001 b i n a r y"
        assert client.write_file(sid, "/workspace/abs.txt", "absolute") == 8
        assert client.read_file(sid, "abs.txt") == b"absolute"
        client.exec(sid, "ln -s /etc out_link; ln -s /etc/hostname host_link; ln -s dir inner_link")
        assert client.read_file(sid, "inner_link/sub/data.bin") == b"\x00\x01binary"  # a symlink inside is fine
        for bad in ("../escape.txt", "dir/../../escape.txt", "/etc/passwd", "/tmp/x", "out_link/x", "host_link"):
            with pytest.raises(SandboxError) as e:
                client.write_file(sid, bad, b"nope")
            assert e.value.status == 400, (bad, e.value)
            with pytest.raises(SandboxError) as e:
                client.read_file(sid, bad)
            assert e.value.status == 400 and sid in str(e.value), (bad, e.value)
        with pytest.raises(SandboxNotFound):
            client.read_file(sid, "no/such/file")
        client.exec(sid, "head -c 2000000 /dev/zero > big.bin")  # the test server's file cap is 1 MiB
        with pytest.raises(SandboxError) as e:
            client.read_file(sid, "big.bin")
        assert e.value.status == 413
        with pytest.raises(SandboxError) as e:
            client.write_file(sid, "toobig.bin", b"x" * ((1 << 20) + 1))
        assert e.value.status == 413
    with httpx.Client(base_url=client.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        r = http.post("/v1/sessions/sb-nonexistent/exec", json={"command": "true"})
        assert r.status_code == 404
        assert r.json() == {"detail": "sandbox session 'sb-nonexistent' not found (closed, reaped after idle, "
                                      "or never created)"}
        assert http.delete("/v1/sessions/sb-nonexistent").status_code == 404


def test_host_files_are_out_of_reach(client, tmp_path):
    marker = tmp_path / "host-secret.txt"
    marker.write_text("host secret")
    os.chmod(tmp_path, 0o755)
    with session(client) as sid:
        for path in ("/etc/shadow", "/root/.bashrc", str(REPO / "pyproject.toml"), str(marker),
                     "/proc/1/root/etc/shadow"):
            r = client.exec(sid, f"cat {path}")
            assert r.exit_code != 0 and r.stdout == "", (path, r)
        r = client.exec(sid, f"ls /root {REPO} /home /var /opt 2>&1; echo; ls /")
        assert "pyproject.toml" not in r.stdout and ".bashrc" not in r.stdout
        assert set(r.stdout.split("\n\n")[-1].split()) <= {"bin", "dev", "etc", "lib", "lib64", "lib32", "libx32",
                                                             "proc", "run", "sbin", "tmp", "usr", "workspace"}
        for cmd in ("touch /usr/pwned", "echo x > /etc/pwned", "touch /pwned", "mkdir /opt",
                    "touch /run/parkrl-runner.py", "touch /dev/pwned"):
            r = client.exec(sid, cmd)
            assert r.exit_code != 0 and ("Read-only" in r.stderr or "ermission" in r.stderr), (cmd, r)
        for path in ("/usr/pwned", "/etc/pwned", "/pwned"):
            assert not os.path.exists(path)
        # the writable places are all size-capped tmpfs
        r = client.exec(sid, "df -k /workspace /tmp /dev/shm | tail -n +2")
        sizes = [int(line.split()[1]) for line in r.stdout.splitlines()]
        assert sizes == [64 * 1024, 16 * 1024, 16 * 1024], r.stdout


def test_no_network_to_the_hosts_loopback(client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):  # reachable from the host itself
            pass
        listener.accept()[0].close()
        with session(client) as sid:
            code = (f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
                    f"    print('CONNECTED')\nexcept OSError as e:\n    print('refused', type(e).__name__)")
            client.write_file(sid, "probe.py", code)
            r = client.exec(sid, "python3 probe.py; cat /proc/net/dev | tail -n +3 | cut -d: -f1")
            assert "CONNECTED" not in r.stdout and "refused" in r.stdout, r
            assert r.stdout.split()[-1] == "lo"  # the only interface
        with pytest.raises(BlockingIOError):
            listener.accept()
    finally:
        listener.close()


# --------------------------------------------------------------------------------- containment

def test_fork_bomb_is_contained(server, client):
    with session(client) as bomb, session(client) as other:
        peak, stop = [0], threading.Event()

        def watch():
            while not stop.is_set():
                per_uid: dict[int, int] = {}
                for p in server.sandbox_procs():
                    try:
                        per_uid[p.uids().real] = per_uid.get(p.uids().real, 0) + 1
                    except psutil.Error:
                        pass
                peak[0] = max([peak[0], *per_uid.values()])
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        result = {}
        runner = threading.Thread(target=lambda: result.update(r=client.exec(bomb, ":(){ :|:& };:; sleep 20", 6)))
        runner.start()
        time.sleep(2.0)  # the bomb is at its cap now
        with server.client() as c2:
            t = time.monotonic()
            assert c2.exec(other, "echo alive").stdout == "alive\n"
            assert time.monotonic() - t < 5, "another session stalled under a fork bomb"
        t = time.monotonic()
        subprocess.run(["true"], check=True)
        assert time.monotonic() - t < 2, "the host stalled under a fork bomb"
        runner.join(30)
        stop.set()
        watcher.join()
        r = result["r"]
        assert r.timed_out and r.exit_code is None, r
        # NPROC caps each sandbox (one host uid each), its runner included; + bwrap's monitor outside
        # (a /proc scan is not atomic: under churn it sees a few more than ever lived at once)
        assert MAX_PROCESSES // 2 < peak[0] <= MAX_PROCESSES + 8, peak[0]
        pids = client.exec(bomb, "echo /proc/[0-9]*").stdout.split()
        assert len(pids) == 2, pids  # the runner and this command's shell: the bomb is gone
    assert wait_until(lambda: not server.sandbox_procs(), 5)


def test_memory_bomb_is_contained(client):
    with session(client) as sid, session(client) as other:
        r = client.exec(sid, "python3 -c 'a = bytearray(1 << 30)'")
        assert r.exit_code == 1 and "MemoryError" in r.stderr, r
        r = client.exec(sid, "python3 -c 'x = []\nwhile True: x.append(bytearray(16 << 20))'")
        assert r.exit_code == 1 and "MemoryError" in r.stderr, r
        assert client.exec(sid, "echo still here").stdout == "still here\n"
        assert client.exec(other, "echo fine").stdout == "fine\n"


def test_no_privileges_inside(client):
    with session(client) as sid:
        r = client.exec(sid, "grep -E '^(CapEff|CapBnd|NoNewPrivs)' /proc/self/status | tr -s '\t' ' '")
        assert r.stdout == "CapEff: 0000000000000000\nCapBnd: 0000000000000000\nNoNewPrivs: 1\n", r
        assert client.exec(sid, "unshare -Ur true").exit_code != 0  # no nested user namespaces
        # the runner (PID 1) cannot be inspected, written to or killed by commands
        for cmd in ("ls /proc/1/fd", "cat /proc/1/environ", "echo x > /proc/1/fd/1"):
            r = client.exec(sid, cmd)
            assert r.exit_code != 0 and "Permission denied" in r.stderr, (cmd, r)
        client.exec(sid, "kill -9 1; kill -TERM 1; kill -INT 1")
        assert client.exec(sid, "echo alive").stdout == "alive\n"


def test_filling_the_workspace_is_contained(client):
    with session(client) as sid, session(client) as other:
        r = client.exec(sid, "head -c 200M /dev/zero > big; echo rc=$?; head -c 50M /dev/zero > /tmp/big; "
                             "head -c 50M /dev/zero > /dev/shm/big; df -k /workspace | tail -1")
        assert r.stderr.count("No space left on device") == 3, r
        assert r.stdout.split()[-2] == "100%", r.stdout
        with pytest.raises(SandboxError) as e:
            client.write_file(sid, "more.txt", b"x" * 100_000)
        assert e.value.status == 507
        assert client.exec(other, "echo fine").stdout == "fine\n"
        client.exec(sid, "rm big")
        assert client.write_file(sid, "more.txt", b"x" * 100_000) == 100_000


def test_huge_output_is_capped(client):
    with session(client) as sid, session(client) as other:
        t = time.monotonic()
        r = client.exec(sid, "head -c 100000000 /dev/zero | tr '\\0' a; head -c 5000000 /dev/zero | tr '\\0' e >&2",
                        timeout_s=30)
        assert not r.timed_out and r.exit_code == 0, r.stderr[-200:]
        assert r.truncated and len(r.stdout) == OUTPUT_CAP and set(r.stdout) == {"a"}
        assert len(r.stderr) == OUTPUT_CAP and set(r.stderr) == {"e"}
        assert time.monotonic() - t < 25
        assert client.exec(other, "echo fine").stdout == "fine\n"
        r = client.exec(sid, "echo short")
        assert (r.stdout, r.truncated) == ("short\n", False)


def test_cannot_signal_or_see_the_server_or_other_sessions(server, client):
    with session(client) as a, session(client) as b:
        assert client.exec(b, "sleep 1001 &").exit_code == 0  # background processes outlive their command
        # (the answer can come before the forked child has exec'd sleep)
        assert wait_until(lambda: len(server.procs_running("sleep", "1001")) == 1, 5)
        victims = server.procs_running("sleep", "1001")
        assert len(victims) == 1
        victim = victims[0]
        r = client.exec(a, f"cat /proc/[0-9]*/cmdline | tr '\\0' ' '; echo; kill -9 {server.proc.pid}; "
                           f"kill -9 {victim.pid}; kill -9 -1")
        assert "1001" not in r.stdout, r.stdout  # B's processes are invisible from A
        assert "No such process" in r.stderr, r
        assert server.proc.poll() is None and victim.is_running()
        assert "1001" in client.exec(b, "ps -eo args").stdout
        assert client.exec(a, "echo survived").stdout == "survived\n"  # the runner (PID 1) shrugs off kill -1
        assert server.client().health()["status"] == "ok"
    assert wait_until(lambda: not victim.is_running(), 5)  # closing B killed its background sleep


def test_timeout_kills_the_whole_tree_and_the_session_lives_on(server, client):
    with session(client) as sid:
        client.exec(sid, "export KEPT=yes; cd /tmp")
        t = time.monotonic()
        r = client.exec(sid, "setsid nohup sleep 1002 >/dev/null 2>&1 & (setsid sleep 1003 &); "
                             "python3 -c 'import os; os.fork() or os.setsid(); __import__(\"time\").sleep(1004)' & "
                             "echo started; sleep 60", timeout_s=1.5)
        assert r.timed_out and r.exit_code is None and r.stdout == "started\n", r
        assert 1.4 < r.duration_s < 5 and time.monotonic() - t < 10

        def strays():
            return (server.procs_running("sleep", "1002") + server.procs_running("sleep", "1003")
                    + server.procs_running("sleep", "60")
                    + [p for p in server.sandbox_procs() if "1004" in " ".join(safe_cmdline(p))])
        assert wait_until(lambda: not strays(), 3), [safe_cmdline(p) for p in strays()]
        r = client.exec(sid, "echo $KEPT; pwd; echo /proc/[0-9]*")
        assert r.stdout.split()[:2] == ["yes", "/tmp"] and len(r.stdout.split()) == 4, r  # runner + this shell


def test_a_command_cannot_wedge_the_persistent_shell(server, client):
    """Commands that never leave the session's shell (a builtin loop), end it (exit, set -e) or change
    its options cannot hang or break the session: the shell is replaced, the saved state restored."""
    with session(client) as sid:
        client.exec(sid, "export KEPT=yes; cd /tmp; f() { echo from-f; }; sleep 1009 &")
        r = client.exec(sid, "export LOST=1; cd /; while :; do :; done", timeout_s=1)
        assert r.timed_out and r.exit_code is None and r.duration_s < 3, r
        r = client.exec(sid, "echo $KEPT [$LOST]; pwd; f; echo /proc/[0-9]*")
        assert r.stdout.split()[:4] == ["yes", "[]", "/tmp", "from-f"], r
        assert len(r.stdout.split()) == 7, r  # the runner, this shell and the background sleep
        assert server.procs_running("sleep", "1009")  # an earlier command's process survives the timeout
        t = time.monotonic()
        assert client.exec(sid, "wait; echo waited").stdout == "waited\n"  # not for earlier commands' jobs
        assert time.monotonic() - t < 5
        assert client.exec(sid, "set -e; false; echo no").exit_code == 1
        assert client.exec(sid, "false; echo $KEPT; echo $-").stdout == "yes\nhBc\n"  # options do not persist
        assert client.exec(sid, "cd /usr; exit 3").exit_code == 3
        assert client.exec(sid, "pwd; exec echo replaced").stdout == "/usr\nreplaced\n"
        assert client.exec(sid, "echo $KEPT").stdout == "yes\n"


def test_background_processes_outlive_their_command(server, client):
    with session(client) as sid:
        # it keeps writing to the finished command's stdout: must neither block nor die of SIGPIPE
        r = client.exec(sid, "(sleep 0.3; for i in $(seq 1 20000); do echo line$i; done; exec sleep 1008) &")
        assert r.exit_code == 0 and r.duration_s < 1
        assert wait_until(lambda: server.procs_running("sleep", "1008"), 5)
        r = client.exec(sid, "echo next")
        assert r.stdout == "next\n"  # nothing of the background output leaks into later commands
    assert wait_until(lambda: not server.procs_running("sleep", "1008"), 2)


# -------------------------------------------------------------------------------- lifecycle

def test_idle_sessions_are_reaped(small_server):
    with small_server.client() as c:
        sid = c.create_session(idle_timeout_s=1)
        kept = c.create_session()
        assert c.exec(sid, "sleep 1000 &").exit_code == 0
        time.sleep(3.0)
        with pytest.raises(SandboxNotFound) as e:
            c.exec(sid, "true")
        assert "reaped after idle" in str(e.value) and sid in str(e.value)
        assert c.exec(kept, "echo kept").stdout == "kept\n"
        assert not small_server.procs_running("sleep", "1000")
        assert 'event="reaped"' in c.metrics()
        c.close_session(kept)
        assert wait_until(lambda: not small_server.sandbox_procs(), 1)  # no zombies left to the host's init


def test_session_cap_answers_429_with_retry_after(small_server):
    with small_server.client() as c:
        sids = [c.create_session(), c.create_session()]
        with httpx.Client(base_url=small_server.url, headers={"Authorization": f"Bearer {TOKEN}"}) as http:
            r = http.post("/v1/sessions", json={})
            assert r.status_code == 429
            assert int(r.headers["Retry-After"]) >= 1
            assert "cap of 2 sessions" in r.json()["detail"]
        with pytest.raises(SandboxBusy) as e:
            c.create_session()
        assert e.value.retry_after >= 1
        c.close_session(sids.pop())
        sids.append(c.create_session())  # a freed slot is reusable
        assert 'reason="session_cap"' in c.metrics()
        for sid in sids:
            c.close_session(sid)


def test_64_sessions_x_20_commands_concurrently(server):
    latencies: list[float] = []

    async def one(c: AsyncSandboxClient, i: int) -> None:
        sid = await c.create_session()
        try:
            for j in range(20):
                t = time.perf_counter()
                r = await c.exec(sid, f"echo {i}-{j}")
                latencies.append(time.perf_counter() - t)
                assert r.stdout == f"{i}-{j}\n", r
        finally:
            await c.close_session(sid)

    async def main() -> None:
        async with AsyncSandboxClient(server.url, TOKEN, timeout_s=120) as c:
            await asyncio.gather(*(one(c, i) for i in range(64)))

    t = time.monotonic()
    asyncio.run(main())
    latencies.sort()
    assert len(latencies) == 64 * 20
    assert time.monotonic() - t < 40
    print(f"64x20 execs in {time.monotonic() - t:.1f} s, p50 {latencies[640] * 1e3:.1f} ms, "
          f"p99 {latencies[1267] * 1e3:.1f} ms")


def test_metrics(server, client):
    with session(client) as sid:
        client.exec(sid, "true")
    text = client.metrics()
    assert re.search(r'parkrl_sandbox_requests_total\{method="POST",route="/v1/sessions/\{sid\}/exec",'
                     r'status="200"\} [1-9]', text), text[:2000]
    assert 'parkrl_sandbox_request_seconds_bucket{le="0.005",method="POST",route="/v1/sessions/{sid}/exec"}' in text
    assert re.search(r"^parkrl_sandbox_sessions_active \d", text, re.MULTILINE)
    assert 'parkrl_sandbox_rejections_total{reason="auth"}' in text


# --------------------------------------------------------------------------------- /run_code

def _b64(s: str | bytes) -> str:
    return base64.b64encode(s.encode() if isinstance(s, str) else s).decode()


def test_run_code_is_sandboxfusion_compatible(client):
    with httpx.Client(base_url=client.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60) as http:
        r = http.post("/run_code", json={"code": "print(input()[::-1])", "language": "python", "stdin": "abc\n",
                                         "run_timeout": 5, "compile_timeout": 5, "memory_limit_MB": -1,
                                         "files": {}, "fetch_files": []})
        assert r.status_code == 200
        body = r.json()
        assert set(body) >= {"status", "message", "compile_result", "run_result", "files"}
        assert body["status"] == "Success" and body["compile_result"] is None and body["files"] == {}
        assert set(body["run_result"]) == {"status", "execution_time", "return_code", "stdout", "stderr"}
        assert body["run_result"]["status"] == "Finished" and body["run_result"]["return_code"] == 0
        assert body["run_result"]["stdout"] == "cba\n" and isinstance(body["run_result"]["execution_time"], float)
        r = http.post("/run_code", json={"code": "print(1)", "language": "cobol"})
        assert r.status_code == 422 and isinstance(r.json()["detail"], str)

    r = client.run_code("import time; time.sleep(10)", run_timeout=1)
    assert r.status == "Failed" and r.run_result.status == "TimeLimitExceeded", r
    r = client.run_code("import sys; print('partial'); sys.exit(3)")
    assert (r.status, r.run_result.status, r.run_result.return_code, r.run_result.stdout) == \
        ("Failed", "Finished", 3, "partial\n")
    r = client.run_code("raise ValueError('boom')")
    assert r.status == "Failed" and r.run_result.return_code == 1 and "ValueError: boom" in r.run_result.stderr
    r = client.run_code("bytearray(300 << 20)", memory_limit_MB=100)
    assert r.status == "Failed" and "MemoryError" in r.run_result.stderr
    r = client.run_code(
        "import json, os, helper\nrows = open('data/in.txt').read().split()\nos.makedirs('out')\n"
        "open('out/result.json', 'w').write(json.dumps(helper.double(rows)))",
        files={"data/in.txt": "a b", "helper.py": "def double(x):\n    return x * 2\n"},
        fetch_files=["out/result.json", "missing.txt"])
    assert r.status == "Success", r
    assert base64.b64decode(r.files["out/result.json"]) == b'["a", "b", "a", "b"]'
    assert "missing.txt" not in r.files and "missing.txt" in r.message
    r = client.run_code("echo $((6 * 7)); ls", language="bash", files={"x.txt": b"1"})
    assert r.status == "Success" and r.run_result.stdout.split() == ["42", "main.sh", "x.txt"]


# ------------------------------------------------------------------------------ start-up rules

def test_refuses_to_start_without_token_or_bwrap(tmp_path):
    srv = Server(token=None, wait=False)
    assert srv.wait() == 2 and "PARKRL_SANDBOX_TOKEN" in srv.log()
    srv.cleanup()
    for args, env in ((["--bwrap", "/nonexistent/bwrap"], {}), ([], {"PATH": "/nonexistent"})):
        srv = Server(*args, env=env, wait=False)
        assert srv.wait() == 3, srv.log()
        log = srv.log()
        assert "refusing to start" in log and "apt-get install -y bubblewrap" in log, log
        assert "--insecure-no-isolation" in log and "listening" not in log
        srv.cleanup()
    # bwrap present but user namespaces forbidden: a stand-in bwrap that fails as bwrap does then
    fake_dir = Path(tempfile.mkdtemp(prefix="parkrl-fake-bwrap-"))
    try:
        os.chmod(fake_dir, 0o755)
        fake = fake_dir / "bwrap"
        fake.write_text("#!/bin/sh\necho 'bwrap: No permissions to creating new namespace, likely because the "
                        "kernel does not allow non-privileged user namespaces.' >&2\nexit 1\n")
        fake.chmod(fake.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH | stat.S_IROTH)
        srv = Server("--bwrap", str(fake), wait=False)
        assert srv.wait() == 3
        log = srv.log()
        assert "user namespaces" in log and "max_user_namespaces" in log, log
        srv.cleanup()
    finally:
        shutil.rmtree(fake_dir)


def test_insecure_no_isolation_warns_on_every_request():
    srv = Server("--insecure-no-isolation", "--max-sessions", "2")
    try:
        log = srv.log()
        assert "INSECURE: --insecure-no-isolation" in log
        with srv.client() as c:
            assert c.health()["isolation"] == "none"
            sid = c.create_session()
            assert c.exec(sid, "echo hi; pwd").stdout.split()[0] == "hi"
            c.close_session(sid)
        assert wait_until(lambda: len(re.findall(r"INSECURE: .*runs without any isolation", srv.log())) >= 3)
        lines = [ln for ln in srv.log().splitlines() if "runs without any isolation" in ln]
        assert any(f"/v1/sessions/{sid}/exec" in ln for ln in lines) and any("DELETE" in ln for ln in lines)
    finally:
        srv.cleanup()


def test_sandboxes_die_with_the_server():
    srv = Server("--max-sessions", "2")
    try:
        with srv.client() as c:
            sid = c.create_session()
            c.exec(sid, "setsid sleep 1006 & sleep 1007 &")
        assert len(srv.sandbox_procs()) >= 3  # bwrap, the runner and the sleeps
        srv.proc.kill()  # no chance to clean up
        srv.proc.wait(10)
        assert wait_until(lambda: not srv.sandbox_procs(), 5), [safe_cmdline(p) for p in srv.sandbox_procs()]
    finally:
        srv.cleanup()
