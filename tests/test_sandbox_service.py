"""The sandbox service as a run starts it (`sandbox.servers=2`: two bubblewrap sandbox servers and the
gateway, parkrl.workers.sandbox_service), attacked through the gateway with the run's token, then
its faults: a server killed mid-episode, a gateway restart. After every case the host is checked:
no file written outside a workspace, the services alive, nothing left running once they stop."""
from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import threading
import time
from pathlib import Path

import httpx
import psutil
import pytest

from parkrl.config import Config
from parkrl.envs import ToolEnvironment
from parkrl.sandbox.client import SandboxClient, SandboxError
from parkrl.tools.sandboxed import connect, endpoint_for
from parkrl.workers.sandbox_service import SandboxService, start_sandbox_service

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None or os.geteuid() != 0,
                                reason="needs bubblewrap and root (per-sandbox host uids)")
REPO = Path(__file__).resolve().parents[1]


def start(tmp: Path, **sandbox) -> SandboxService:
    cfg = Config()
    cfg.trainer.runtime = "local"
    cfg.sandbox.servers = 2
    cfg.sandbox.sessions_per_server = 6
    cfg.sandbox.server_args = ["--workspace-mb", "32", "--memory-mb", "512", "--max-processes", "32",
                               "--max-timeout-s", "20"]
    for k, v in sandbox.items():
        setattr(cfg.sandbox, k, v)
    return start_sandbox_service(cfg, tmp)


def processes(svc: SandboxService) -> list[psutil.Process]:
    """The service's processes and everything they started."""
    out = []
    for group in (svc.servers, svc.gateway):
        for pid in group.call("pid"):
            try:
                root = psutil.Process(pid)
                out += [root, *root.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
    return out


def stop_and_check_host(svc: SandboxService) -> None:
    procs = processes(svc)
    assert procs and all(p.is_running() for p in procs[:1])
    svc.shutdown()
    deadline = time.monotonic() + 10
    while any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p.pid for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    svc = start(tmp_path_factory.mktemp("run"))
    yield svc
    stop_and_check_host(svc)


@pytest.fixture()
def client(service):
    with SandboxClient(service.url, Path(service.token_file).read_text(), timeout_s=60) as c:
        yield c


class Session:
    def __init__(self, client: SandboxClient) -> None:
        self.client, self.sid = client, client.create_session()

    def __call__(self, command: str, timeout_s: float = 10):
        return self.client.exec(self.sid, command, timeout_s)

    def __enter__(self) -> "Session":
        return self

    def __exit__(self, *exc) -> None:
        self.client.close_session(self.sid)


def test_tokens_are_checked_and_runs_see_only_their_sessions(service, client):
    for headers in ({}, {"Authorization": "Bearer not-the-token-0123456789"}):
        r = httpx.post(f"{service.url}/v1/sessions", headers=headers, json={}, timeout=10)
        assert r.status_code == 401, r.text
    tokens = Path(service.token_file).parent / "tokens.json"
    runs = json.loads(tokens.read_text())
    other_token = "other-run-token-" + os.urandom(8).hex()
    tokens.write_text(json.dumps({**runs, "other": other_token}))  # the gateway re-reads it
    with Session(client) as mine:
        assert mine("echo mine").stdout == "mine\n"
        deadline = time.monotonic() + 10
        while True:  # until the gateway has re-read the file
            r = httpx.post(f"{service.url}/v1/sessions/{mine.sid}/exec", json={"command": "echo stolen"},
                           headers={"Authorization": f"Bearer {other_token}"}, timeout=10)
            if r.status_code != 401 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert r.status_code == 404 and "stolen" not in r.text, r.text
    assert "token" not in service.token_file or other_token not in Path(service.token_file).read_text()


def test_host_files_are_out_of_reach(client, tmp_path):
    secret = tmp_path / "host-secret.txt"
    secret.write_text("host secret")
    with Session(client) as s:
        for path in ("/etc/shadow", "/root/.bashrc", str(REPO / "pyproject.toml"), str(secret), "../../etc/shadow"):
            r = s(f"cat {path}")
            assert r.exit_code != 0 and r.stdout == "", (path, r)
        for cmd in ("touch /usr/pwned", "echo x > /etc/pwned", f"echo x > {tmp_path}/pwned", "touch ../pwned"):
            assert s(cmd).exit_code != 0, cmd
        assert not (tmp_path / "pwned").exists() and not Path("/usr/pwned").exists()
        s("ln -s /etc/passwd link; ln -s / root; mkdir d")
        for bad in ("../../etc/passwd", "/etc/passwd", "link", "root/etc/passwd", "d/../../etc/passwd"):
            with pytest.raises(SandboxError) as e:
                client.read_file(s.sid, bad)
            assert e.value.status in (400, 403, 404), (bad, e.value)
        for bad in ("../escape.txt", "/etc/escape.txt", "root/tmp/escape.txt"):
            with pytest.raises(SandboxError):
                client.write_file(s.sid, bad, "x")
        assert not Path("/etc/escape.txt").exists() and not Path("/tmp/escape.txt").exists()


def test_no_connection_to_the_hosts_loopback(client):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    try:
        with Session(client) as s:
            client.write_file(s.sid, "probe.py", f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', "
                                                 f"{port}), timeout=3)\n    print('CONNECTED')\nexcept OSError:\n"
                                                 f"    print('refused')\n")
            r = s("python3 probe.py")
            assert r.stdout.strip() == "refused", r
    finally:
        listener.close()


def test_bombs_are_contained_and_the_others_keep_working(service, client):
    def service_processes() -> int:
        return len(processes(service))

    before = service_processes()
    with Session(client) as other:
        with Session(client) as bomb:  # a fork bomb left running in the background: it fills only its own cap
            bomb("bomb() { bomb | bomb & }; bomb", timeout_s=3)
            time.sleep(2)
            t = time.monotonic()
            assert other("echo fine").stdout == "fine\n" and time.monotonic() - t < 10
            assert service_processes() < before + 2 * 32 + 10  # --max-processes 32 per sandbox (+ its shell)
        assert other("echo fine").stdout == "fine\n"
        deadline = time.monotonic() + 10  # closing the session killed every process of the bomb
        while service_processes() > before + 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert service_processes() <= before + 3
        with Session(client) as s:
            r = s("python3 -c 'x = bytearray(2 << 30)'")
            assert r.exit_code != 0 and "MemoryError" in r.stderr, r
            r = s("head -c 100M /dev/zero > big; df -k /workspace | tail -1")
            assert "No space left on device" in r.stderr and r.stdout.split()[-2] == "100%", r
            r = s("head -c 100000000 /dev/zero | tr '\\0' a", timeout_s=20)
            assert r.truncated and 0 < len(r.stdout) <= 1 << 20, (r.truncated, len(r.stdout))
            assert s("echo alive").stdout == "alive\n" and other("echo fine").stdout == "fine\n"
    assert all(p.is_running() for p in processes(service)[:1])


def test_cannot_kill_the_services_or_see_other_sessions(service, client):
    server_pids, gateway_pid = service.servers.call("pid"), service.gateway.call("pid")[0]
    with Session(client) as a, Session(client) as b:
        b("sleep 1001 &")
        r = a(f"kill -9 {' '.join(map(str, server_pids))} {gateway_pid}; kill -9 -1; cat /proc/[0-9]*/cmdline | tr '\\0' ' '")
        assert "1001" not in r.stdout, r.stdout
        assert "1001" in b("ps -eo args").stdout
        assert all(psutil.pid_exists(p) for p in [*server_pids, gateway_pid])
        assert a("echo survived").stdout == "survived\n"


def test_a_killed_server_costs_only_its_session_and_retry_replaces_it(tmp_path):
    svc = start(tmp_path, on_server_lost="retry")
    try:
        connect(endpoint_for(svc.url, svc.token_file, on_server_lost="retry", busy_wait_s=5))
        env = ToolEnvironment(tools=["terminal"], call_format="tag")
        env.reset({"question": "q", "files": {"logs/app.log": "ERROR a\nINFO b\nERROR c\n"}})
        assert env.step("<terminal>grep -c ERROR logs/app.log</terminal>").observation[0]["content"] == "2"
        server = base64.urlsafe_b64decode(env.sandbox.session_id.split(".")[1] + "==").decode().split("\n")[0]
        ranks = [i for i, u in enumerate(svc.servers.call("listening_url")) if u == server]
        os.kill(svc.servers.call("pid", ranks=ranks)[0], 9)
        r = env.step("<terminal>grep -c ERROR logs/app.log</terminal>")  # retried on the other server, files again
        assert r.observation[0]["content"] == "2", r
        env.close()

        connect(endpoint_for(svc.url, svc.token_file, on_server_lost="observation", busy_wait_s=5))
        env = ToolEnvironment(tools=["terminal"], call_format="tag")
        env.reset({"question": "q"})
        assert env.step("<terminal>echo up</terminal>").observation[0]["content"] == "up"
        sid = env.sandbox.session_id
        for pid in svc.servers.call("pid"):
            if psutil.pid_exists(pid):
                os.kill(pid, 9)
        t = time.monotonic()
        text = env.step("<terminal>echo again</terminal>").observation[0]["content"]
        assert text.startswith("error: SandboxError") and sid in text and time.monotonic() - t < 20, text
        env.close()
    finally:
        connect(None)
        svc.shutdown()


def test_the_tools_reconnect_after_a_gateway_restart(tmp_path):
    svc = start(tmp_path)
    try:
        connect(endpoint_for(svc.url, svc.token_file, busy_wait_s=30))
        env = ToolEnvironment(tools=["terminal"], call_format="tag")
        env.reset({"question": "q"})
        assert env.step("<terminal>cd /tmp; export KEPT=1; echo ok</terminal>").observation[0]["content"] == "ok"
        old_pid = svc.gateway.call("pid")[0]
        svc.gateway.call("shutdown")  # the gateway is down while the next tool call starts
        result: list = []
        t0 = time.monotonic()
        call = threading.Thread(target=lambda: result.append(env.step("<terminal>pwd; echo $KEPT</terminal>")))
        call.start()
        time.sleep(1.5)
        assert call.is_alive()  # still retrying the refused connection
        assert svc.gateway.call("restart")[0] == svc.url  # same port, same secret
        call.join(30)
        assert svc.gateway.call("pid")[0] != old_pid and time.monotonic() - t0 >= 1.5
        r = result[0].observation[0]["content"]
        assert r == "/tmp\n1", r  # the same session, through the new gateway
        env.close()
    finally:
        connect(None)
        stop_and_check_host(svc)



def test_python_and_think_tools_through_the_gateway(service):
    connect(endpoint_for(service.url, service.token_file))
    try:
        env = ToolEnvironment(tools=["python", "think", "terminal"], call_format="tag",
                              tool_args={"python": {"timeout_s": 2}, "terminal": {"output_chars": 300}})
        env.reset({"question": "q"})
        r = env.step("<think>first look</think><python>import os; print(6 * 7, os.getcwd() != '/root')</python>")
        assert r.observation[0]["content"] == "\n42 True" and r.info == {"tool_calls": 1, "think_calls": 1,
                                                                         "tool_errors": 0}
        r = env.step("<python>while True: pass</python>")
        assert r.observation[0]["content"] == "[timed out after 2 s]", r
        r = env.step("<terminal>head -c 5000 /dev/zero | tr '\\0' x</terminal>")
        assert r.observation[0]["content"] == "x" * 300 + "\n[output truncated: 5000 characters, showing 300]"
        env.close()
        assert env.sandbox.session_id is None
    finally:
        connect(None)


@pytest.mark.parametrize("case", ["unreachable", "wrong token"])
def test_a_bad_sandbox_url_or_token_fails_before_any_worker_starts(service, tmp_path, case):
    import subprocess
    import sys

    token = tmp_path / "token"
    if case == "unreachable":
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"  # bound, never listening: connection refused
        token.write_text(Path(service.token_file).read_text())
    else:
        url = service.url
        token.write_text("not-this-runs-token-0123456789")
    out = tmp_path / "out"
    t = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "parkrl.train", "recipe=terminal_agent", "sandbox.servers=0",
                           f"sandbox.url={url}", f"sandbox.token_file={token}", f"trainer.output_dir={out}"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("parkrl: error:") and url in last, last
    assert ("does not answer" if case == "unreachable" else "rejected the token") in last
    assert time.monotonic() - t < 60 and not out.exists()


@pytest.mark.integration
def test_terminal_agent_trains_through_ray_vllm_the_gateway_and_two_servers(tiny_model_dir, tmp_path, ray_session):
    """Two steps of recipe=terminal_agent on Ray with vLLM; every episode's environment works
    through the sandbox service the run started (2 servers + gateway as Ray actors)."""
    from hydra import compose, initialize_config_dir

    from parkrl.controller import train
    from parkrl.train import CONF_DIR, to_config

    overrides = ["recipe=terminal_agent", f"model.path={tiny_model_dir}", "env.cls=custom_env.SandboxEcho",
                 "env.final_reward=false", "trainer.total_steps=2", "trainer.eval_every=0",
                 "trainer.save_final=false", "trainer.save_final_checkpoint=false", "trainer.prompts_per_step=2",
                 "rollout.n=4", "rollout.max_new_tokens=12", "rollout.dtype=float32", "learner.dtype=float32",
                 "rollout.kv_cache_gib=0.25", "resources.learner.cpus_per_worker=1",
                 "resources.rollout.cpus_per_worker=1", "data.train_size=50", "data.eval_size=4",
                 f"trainer.output_dir={tmp_path / 'run'}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = to_config(compose(config_name="parkrl", overrides=overrides))
    cfg.env.args = {}  # the recipe's are ToolEnvironment's (Hydra merges dicts given on the command line)
    assert cfg.sandbox.servers == 2 and cfg.trainer.runtime == "ray"
    out = train(cfg)
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["reward/mean"] == 1.0 and r["env/sandbox_checks_mean"] == 1.0  # 8 episodes, each through the service
    assert sorted(p.name for p in (out / "sandbox").iterdir()) == ["gateway_secret", "run_token", "server_token",
                                                                 "tokens.json"]
    assert all((p.stat().st_mode & 0o077) == 0 for p in (out / "sandbox").iterdir())  # secrets: owner only


def test_terminal_tasks_answers_are_what_the_shell_says_and_eval_is_disjoint(client):
    from parkrl.config import DataConfig
    from parkrl.data import TaskPrompts
    from parkrl.data.terminal_tasks import KINDS, terminal_task_samples

    samples = terminal_task_samples(seed=3, size=2 * len(KINDS))
    assert {s["check"].split()[0] for s in samples} == {"grep", "ls", "wc"}
    for s in samples:
        with Session(client) as sh:
            for path, text in s["files"].items():
                client.write_file(sh.sid, path, text)
            assert sh(s["check"]).stdout.strip() == s["answer"], s["question"]
    data = TaskPrompts(DataConfig(task="terminal_files", train_size=3000, eval_size=40, system_prompt=""), 0)
    assert len(data.eval) == 40 and not {s["uid"] for s in data.eval} & {s["uid"] for s in data.train}
    assert len({s["question"] for s in data.eval}) < 40  # questions repeat over trees: the uid tells them apart
