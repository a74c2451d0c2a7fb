"""The API gateway (parkrl/gateway/): unit tests of its pure parts, then integration tests with two
real sandbox servers and the real gateway as subprocesses, all on 127.0.0.1 with ports from port 0."""
from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from parkrl.gateway.admission import Admission
from parkrl.gateway.auth import AuthConfigError, RunTokens, parse_tokens
from parkrl.gateway.metrics import quantile, route_label
from parkrl.gateway.registry import ServerRegistry
from parkrl.gateway.session_ids import SessionIdCodec

TOKENS = {"run-a": "token-a-0123456789abcdef", "run-b": "token-b-0123456789abcdef"}


# ----------------------------------------------------------------------------- unit: pure logic

def test_session_ids_route_for_their_run_only():
    codec = SessionIdCodec(b"s" * 32)
    sid = codec.encode("run-a", "http://127.0.0.1:9", "abc123")
    ref = codec.decode("run-a", sid)
    assert (ref.server_url, ref.server_sid) == ("http://127.0.0.1:9", "abc123")
    assert codec.decode("run-b", sid) is None                      # another run: same as unknown
    assert SessionIdCodec(b"t" * 32).decode("run-a", sid) is None  # another gateway secret
    head, payload, mac = sid.split(".")
    forged = SessionIdCodec(b"s" * 32).encode("run-a", "http://127.0.0.1:9", "other").split(".")[1]
    for bad in (f"{head}.{forged}.{mac}", f"{head}.{payload}.{mac[:-2]}AA", "gs1.x", "", "gs1..", "x" * 5000):
        assert codec.decode("run-a", bad) is None, bad


def test_tokens_file_is_validated_and_lookup_finds_the_run():
    tokens = RunTokens(parse_tokens(json.dumps(TOKENS)))
    assert tokens.run_for("Bearer token-b-0123456789abcdef") == "run-b"
    assert tokens.run_for("bearer  token-a-0123456789abcdef ") == "run-a"
    for header in (None, "", "Bearer", "Bearer wrong-token-0123456789", "Basic token-a-0123456789abcdef",
                   "token-a-0123456789abcdef"):
        assert tokens.run_for(header) is None, header
    for text, msg in (("run-a tok", "not JSON"), ("[]", "JSON object"), ('{"a b": "0123456789abcdef0"}', "run id"),
                      ('{"a": "short"}', "at least 16"),
                      ('{"a": "0123456789abcdef0", "b": "0123456789abcdef0"}', "same token")):
        with pytest.raises(AuthConfigError, match=msg):
            parse_tokens(text)


def test_admission_caps_per_run_and_in_total():
    clock = [0.0]
    adm = Admission(max_sessions_per_run=2, max_sessions=3, default_idle_timeout_s=10, retry_after_s=4,
                    idle_grace_s=1, clock=lambda: clock[0])
    for i in range(2):
        assert adm.reserve("a") is None
        adm.placing("s1", +1)
        adm.commit(f"a{i}", "a", "s1", None)
    rej = adm.reserve("a")
    assert rej.reason == "run_cap" and "run 'a'" in rej.detail and rej.retry_after_s == 4
    assert adm.reserve("b") is None                 # pending creations count too
    rej = adm.reserve("c")
    assert rej.reason == "total_cap" and adm.total() == 3
    adm.release("b")                                # the creation failed: the slot is free again
    assert adm.reserve("c") is None
    adm.release("c")
    assert adm.drop("a0") and not adm.drop("a0") and adm.for_run("a") == 1
    adm.touch("b9", "b", "s2")                      # adopted after a gateway restart
    assert (adm.for_run("b"), adm.for_server("s2"), adm.total()) == (1, 1, 2)
    assert adm.drop_server("s2") == 1 and adm.for_run("b") == 0
    clock[0] = 10.5
    adm.touch("a1", "a", "s1")
    clock[0] = 21.0                                 # 10.5 s idle < 10 + 1 grace: kept
    assert adm.prune_idle() == 0
    clock[0] = 22.0
    assert adm.prune_idle() == 1 and adm.total() == 0


def test_registry_picks_the_least_loaded_healthy_server():
    reg = ServerRegistry(["http://127.0.0.1:1/", "http://127.0.0.1:2", "http://127.0.0.1:3"])
    for s in reg.servers:
        reg.mark_up(s, {"sessions": 0})
    load = {"http://127.0.0.1:1": 2, "http://127.0.0.1:2": 1, "http://127.0.0.1:3": 1}
    assert [s.index for s in reg.by_load(load.get)] == [1, 2, 0]
    reg.servers[2].reported_sessions = 5            # sessions it holds that this gateway has not seen
    assert [s.index for s in reg.by_load(load.get)] == [1, 0, 2]
    downs = []
    reg.on_down = downs.append
    reg.mark_down(reg.servers[1], "connection refused")
    assert [s.index for s in reg.by_load(load.get)] == [0, 2] and downs == [reg.servers[1]]
    with pytest.raises(ValueError, match="twice"):
        ServerRegistry(["http://127.0.0.1:1", "http://127.0.0.1:1/"])


def test_metric_helpers():
    assert route_label("/v1/sessions/gs1.abc.def/exec") == "/v1/sessions/{sid}/exec"
    assert route_label("/v1/sessions/x") == "/v1/sessions/{sid}" and route_label("/v1/sessions") == "/v1/sessions"
    assert route_label("/etc/passwd") == "other"
    values = [i / 100 for i in range(100)]
    assert (quantile(values, 0.5), quantile(values, 0.99)) == (0.49, 0.98)


def test_cli_settings(tmp_path):
    from parkrl.gateway.__main__ import build_parser, config_from_args

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKENS))
    base = ["--servers", "http://127.0.0.1:1,http://127.0.0.1:2/"]
    config = config_from_args(build_parser().parse_args(base + ["--tokens-file", str(tokens)]))
    assert config.run_tokens.run_ids == ["run-a", "run-b"] and not config.secret_persistent
    assert config.servers == ["http://127.0.0.1:1", "http://127.0.0.1:2/"]
    assert config_from_args(build_parser().parse_args(base + ["--insecure-no-auth"])).run_tokens is None
    with pytest.raises(AuthConfigError, match="exclude"):
        config_from_args(build_parser().parse_args(base + ["--insecure-no-auth", "--tokens-file", str(tokens)]))
    with pytest.raises(ValueError, match="caps|>= 1"):
        config_from_args(build_parser().parse_args(base + ["--tokens-file", str(tokens), "--max-sessions", "0"]))


def test_gateway_refuses_to_start_without_run_tokens(tmp_path):
    cmd = [sys.executable, "-m", "parkrl.gateway", "--port", "0", "--servers", "http://127.0.0.1:9"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--insecure-no-auth" in r.stderr
    bad = tmp_path / "tokens.json"
    bad.write_text("run-a token-a-0123456789abcdef\n")
    r = subprocess.run(cmd + ["--tokens-file", str(bad)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not JSON" in r.stderr and "token-a-0123456789abcdef" not in r.stderr


# ----------------------------------------------------------------------------- integration: processes

SERVER_TOKEN = "server-token-0123456789abcdef"
SECRET = "gateway-secret-0123456789abcdef"
_URL = re.compile(r"listening on (http://127\.0\.0\.1:\d+)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    """A server or gateway subprocess, its URL and its log file."""

    popen: subprocess.Popen
    url: str
    log: Path
    cmd: list[str] = field(default_factory=list)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def _spawn(cmd: list[str], log: Path, timeout_s: float = 30.0) -> Proc:
    """Starts `cmd` and waits for its "listening on http://..." line."""
    out = open(log, "ab")
    popen = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=Path(__file__).parents[1],
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        m = _URL.search(log.read_text(errors="replace"))
        if m:
            return Proc(popen, m.group(1), log, cmd)
        if popen.poll() is not None:
            break
        time.sleep(0.05)
    popen.kill()
    raise AssertionError(f"{cmd[2]} did not start:\n{log.read_text(errors='replace')[-3000:]}")


def start_server(tmp: Path, name: str, max_sessions: int = 8, port: int = 0) -> Proc:
    (tmp / "server-token").write_text(SERVER_TOKEN)
    uid_base = 2_010_000_000 + random.randrange(0, 130_000) * 1000  # own host-uid range per server (< 2**31)
    return _spawn([sys.executable, "-m", "parkrl.sandbox.server", "--port", str(port), "--token-file",
                   str(tmp / "server-token"), "--max-sessions", str(max_sessions), "--uid-base", str(uid_base),
                   "--log-level", "info"], tmp / f"{name}.log")


def start_gateway(tmp: Path, servers: list[str], *extra: str, port: int = 0, secret: str = SECRET,
                  name: str = "gateway") -> Proc:
    (tmp / "tokens.json").write_text(json.dumps(TOKENS))
    (tmp / "server-token").write_text(SERVER_TOKEN)
    (tmp / f"secret-{name}").write_text(secret)
    return _spawn([sys.executable, "-m", "parkrl.gateway", "--port", str(port), "--servers", ",".join(servers),
                   "--tokens-file", str(tmp / "tokens.json"), "--server-token-file", str(tmp / "server-token"),
                   "--secret-file", str(tmp / f"secret-{name}"), *extra], tmp / f"{name}.log")


def auth(run: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[run]}"}


def server_sessions(url: str) -> int:
    return httpx.get(f"{url}/healthz", timeout=5).json()["sessions"]


def scrape(url: str) -> dict[str, float]:
    """/metrics as {sample with labels: value}."""
    text = httpx.get(f"{url}/metrics", headers=auth("run-a"), timeout=5).text
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Two sandbox servers and a gateway (per-run cap 3, total cap 5) in front of them."""
    tmp = tmp_path_factory.mktemp("gateway-fleet")
    servers = [start_server(tmp, f"server{i}") for i in range(2)]
    gateway = None
    try:
        gateway = start_gateway(tmp, [s.url for s in servers], "--max-sessions-per-run", "3", "--max-sessions", "5",
                                "--retry-after-s", "7")
        yield gateway, servers
    finally:
        for p in [gateway, *servers]:
            if p is not None:
                p.stop()


@pytest.fixture
def client(fleet):
    """An httpx client on the gateway; closes the sessions a test left open."""
    gateway, _ = fleet
    with httpx.Client(base_url=gateway.url, timeout=30) as c:
        c.opened = []  # (run, session id)
        yield c
        for run, sid in c.opened:
            c.delete(f"/v1/sessions/{sid}", headers=auth(run))


def open_session(c: httpx.Client, run: str) -> str:
    r = c.post("/v1/sessions", headers=auth(run), json={})
    assert r.status_code == 201, r.text
    sid = r.json()["session_id"]
    c.opened.append((run, sid))
    return sid


def test_tokens_are_required_and_sessions_are_private_to_their_run(fleet, client):
    gateway, _ = fleet
    assert client.post("/v1/sessions", json={}).status_code == 401
    r = client.post("/v1/sessions", json={}, headers={"Authorization": "Bearer wrong-token-0123456789"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.get("/metrics").status_code == 401
    sid = open_session(client, "run-a")
    assert client.post(f"/v1/sessions/{sid}/exec", json={"command": "true"}).status_code == 401
    r = client.post(f"/v1/sessions/{sid}/exec", headers=auth("run-b"), json={"command": "echo stolen"})
    assert r.status_code == 404 and sid in r.json()["detail"]           # like a session that does not exist
    assert client.delete(f"/v1/sessions/{sid}", headers=auth("run-b")).status_code == 404
    unknown = sid[:-4] + ("AAAA" if not sid.endswith("AAAA") else "BBBB")
    assert client.post(f"/v1/sessions/{unknown}/exec", headers=auth("run-a"), json={"command": "true"}).json() == \
        {"detail": f"sandbox session '{unknown}' not found (closed, reaped after idle, or never created)"}
    r = client.post(f"/v1/sessions/{sid}/exec", headers=auth("run-a"), json={"command": "echo mine"})
    assert r.status_code == 200 and r.json()["stdout"] == "mine\n"       # still there, untouched
    log = gateway.log.read_text()
    assert all(tok not in log for tok in (*TOKENS.values(), "wrong-token-0123456789", SERVER_TOKEN))


def test_state_carries_across_calls_through_the_gateway(fleet, client):
    """Affinity: every call of a session lands on the server that holds it (the trainer's client works as is)."""
    from parkrl.sandbox.client import SandboxClient, SandboxNotFound

    gateway, _ = fleet
    with SandboxClient(gateway.url, TOKENS["run-b"]) as sb:
        sids = [sb.create_session() for _ in range(2)]  # one on each server
        client.opened += [("run-b", s) for s in sids]
        for i, sid in enumerate(sids):
            sb.exec(sid, f"mkdir -p d{i} && cd d{i} && export MARK=m{i} && echo v{i} > f.txt")
            assert sb.write_file(sid, "up.bin", b"\x00\x01" * i) == 2 * i
        for i, sid in enumerate(sids):
            r = sb.exec(sid, 'echo "$MARK $(pwd) $(cat f.txt)"')
            assert r.stdout == f"m{i} /workspace/d{i} v{i}\n", r
            assert sb.read_file(sid, "up.bin") == b"\x00\x01" * i
        sb.close_session(sids[0])
        with pytest.raises(SandboxNotFound, match=re.escape(sids[0])):
            sb.exec(sids[0], "true")
    server_sid = _payload(sids[0]).split(b"\n")[1].decode()
    r = client.get(f"/v1/sessions/{sids[0]}/files", params={"path": "up.bin"}, headers=auth("run-b"))
    assert r.status_code == 404 and sids[0] in r.json()["detail"] and server_sid not in r.json()["detail"]


def test_new_sessions_spread_over_the_servers(fleet, client):
    _, servers = fleet
    before = [server_sessions(s.url) for s in servers]
    for run in ("run-a", "run-a", "run-b", "run-b"):
        open_session(client, run)
    after = [server_sessions(s.url) for s in servers]
    assert [a - b for a, b in zip(after, before)] == [2, 2]


def test_caps_per_run_and_in_total_answer_429_with_retry_after(fleet, client):
    m0 = scrape(fleet[0].url)
    a = [open_session(client, "run-a") for _ in range(3)]
    r = client.post("/v1/sessions", headers=auth("run-a"), json={})
    assert r.status_code == 429 and r.headers["retry-after"] == "7" and "run 'run-a'" in r.json()["detail"]
    t0 = time.monotonic()
    [open_session(client, "run-b") for _ in range(2)]
    r = client.post("/v1/sessions", headers=auth("run-b"), json={})  # run-b has 2 < 3, but 5 in total
    assert r.status_code == 429 and r.headers["retry-after"] == "7" and "--max-sessions 5" in r.json()["detail"]
    assert time.monotonic() - t0 < 10  # answered at once, never queued
    assert client.delete(f"/v1/sessions/{a[0]}", headers=auth("run-a")).status_code == 204
    open_session(client, "run-b")                                    # a slot freed: admitted again
    m1 = scrape(fleet[0].url)
    for reason in ("run_cap", "total_cap"):
        key = f'parkrl_gateway_rejections_total{{reason="{reason}"}}'
        assert m1[key] - m0.get(key, 0) == 1
    assert m1["parkrl_gateway_active_sessions"] == 5


def test_metrics_count_requests_latency_sessions_and_rejections(fleet, client):
    gateway, _ = fleet
    m0 = scrape(gateway.url)
    sid = open_session(client, "run-a")
    for _ in range(20):
        r = client.post(f"/v1/sessions/{sid}/exec", headers=auth("run-a"), json={"command": "true"})
        assert r.status_code == 200
    client.post("/v1/sessions", json={})  # 401
    m1 = scrape(gateway.url)
    exec_ok = 'parkrl_gateway_requests_total{method="POST",route="/v1/sessions/{sid}/exec",status="200"}'
    assert m1[exec_ok] - m0.get(exec_ok, 0) == 20
    assert m1['parkrl_gateway_rejections_total{reason="unauthorized"}'] - \
        m0.get('parkrl_gateway_rejections_total{reason="unauthorized"}', 0) == 1
    assert m1["parkrl_gateway_active_sessions"] == m0["parkrl_gateway_active_sessions"] + 1
    assert m1['parkrl_gateway_active_sessions_by_run{run="run-a"}'] >= 1
    p50 = m1['parkrl_gateway_request_latency_quantiles_seconds{quantile="0.5",route="/v1/sessions/{sid}/exec"}']
    p99 = m1['parkrl_gateway_request_latency_quantiles_seconds{quantile="0.99",route="/v1/sessions/{sid}/exec"}']
    assert 0 < p50 <= p99 < 10
    assert m1['parkrl_gateway_request_latency_seconds_count{route="/v1/sessions/{sid}/exec"}'] >= 20
    assert all(m1[f'parkrl_gateway_server_up{{server="{s.url}"}}'] == 1 for s in fleet[1])
    client.delete(f"/v1/sessions/{sid}", headers=auth("run-a"))
    client.opened.remove(("run-a", sid))
    assert scrape(gateway.url)["parkrl_gateway_active_sessions"] == m0["parkrl_gateway_active_sessions"]


def test_run_code_goes_to_a_healthy_server(fleet, client):
    r = client.post("/run_code", headers=auth("run-b"), json={"code": "print(6 * 7)", "language": "python"})
    assert r.status_code == 200 and r.json()["status"] == "Success" and r.json()["run_result"]["stdout"] == "42\n"
    assert client.post("/run_code", json={"code": "print(1)"}).status_code == 401


def test_gateway_restart_on_the_same_port_keeps_routing_open_sessions(fleet, tmp_path):
    """Session ids are signed, not stored: a gateway restarted with the same secret routes the old ones."""
    _, servers = fleet
    urls = [s.url for s in servers]
    port = _free_port()
    gw = start_gateway(tmp_path, urls, "--max-sessions-per-run", "2", "--health-interval-s", "0.5", port=port,
                       name="gw1")
    c = httpx.Client(timeout=30)
    try:
        sid = c.post(f"{gw.url}/v1/sessions", headers=auth("run-a"), json={}).json()["session_id"]
        c.post(f"{gw.url}/v1/sessions/{sid}/exec", headers=auth("run-a"), json={"command": "export KEPT=yes"})
        gw.stop()
        with pytest.raises(httpx.ConnectError):
            c.post(f"{gw.url}/v1/sessions/{sid}/exec", headers=auth("run-a"), json={"command": "true"})
        gw = start_gateway(tmp_path, urls, "--max-sessions-per-run", "2", "--health-interval-s", "0.5", port=port,
                       name="gw2")
        assert gw.url == f"http://127.0.0.1:{port}"
        r = c.post(f"{gw.url}/v1/sessions/{sid}/exec", headers=auth("run-a"), json={"command": "echo $KEPT"})
        assert r.status_code == 200 and r.json()["stdout"] == "yes\n"     # same session, same shell state
        r = c.post(f"{gw.url}/v1/sessions", headers=auth("run-a"), json={})
        assert r.status_code == 201                                       # new sessions work
        new = r.json()["session_id"]
        r = c.post(f"{gw.url}/v1/sessions", headers=auth("run-a"), json={})
        assert r.status_code == 429                                       # the old session was re-adopted: 2 of 2
        assert c.delete(f"{gw.url}/v1/sessions/{new}", headers=auth("run-a")).status_code == 204
        # a run added to the tokens file is let in without a restart
        run_c = {"Authorization": "Bearer token-c-0123456789abcdef"}
        assert c.post(f"{gw.url}/v1/sessions", headers=run_c, json={}).status_code == 401
        (tmp_path / "tokens.json").write_text(json.dumps({**TOKENS, "run-c": "token-c-0123456789abcdef"}))
        deadline = time.monotonic() + 10
        while (r := c.post(f"{gw.url}/v1/sessions", headers=run_c, json={})).status_code == 401 \
                and time.monotonic() < deadline:
            time.sleep(0.2)
        assert r.status_code == 201
        assert c.delete(f"{gw.url}/v1/sessions/{r.json()['session_id']}", headers=run_c).status_code == 204
        gw.stop()
        gw = start_gateway(tmp_path, urls, port=port, secret="another-secret-0123456789", name="gw3")
        r = c.post(f"{gw.url}/v1/sessions/{sid}/exec", headers=auth("run-a"), json={"command": "true"})
        assert r.status_code == 404                                       # another secret: ids do not carry over
    finally:
        gw.stop()
        c.close()
        server_url, server_sid = _payload(sid).decode().split("\n")  # close it on its server directly
        httpx.delete(f"{server_url}/v1/sessions/{server_sid}", headers={"Authorization": f"Bearer {SERVER_TOKEN}"})


def test_a_killed_server_fails_its_sessions_fast_and_new_ones_go_elsewhere(tmp_path):
    """Also: a server's own 429 moves on to the next server, and a full fleet answers 429 with Retry-After."""
    servers = [start_server(tmp_path, f"s{i}", max_sessions=2) for i in range(2)]
    gw = start_gateway(tmp_path, [s.url for s in servers], "--health-interval-s", "0.5", "--exec-margin-s", "1")
    c = httpx.Client(base_url=gw.url, timeout=30, headers=auth("run-a"))
    try:
        sids = [c.post("/v1/sessions", json={}).json()["session_id"] for _ in range(4)]
        assert [server_sessions(s.url) for s in servers] == [2, 2]
        r = c.post("/v1/sessions", json={})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1 and "full" in r.json()["detail"]
        for sid in sids:
            c.post(f"/v1/sessions/{sid}/exec", json={"command": "export HERE=1"})
        victim, survivor = servers
        victim_sids = [sid for sid in sids if _payload(sid).startswith(victim.url.encode() + b"\n")]
        assert len(victim_sids) == 2
        victim.popen.send_signal(signal.SIGSTOP)  # hung: the call's deadline (timeout_s + margin) answers
        t0 = time.monotonic()
        r = c.post(f"/v1/sessions/{victim_sids[0]}/exec", json={"command": "true", "timeout_s": 0.5})
        assert r.status_code == 504 and 1.4 < time.monotonic() - t0 < 5
        assert victim_sids[0] in r.json()["detail"] and victim.url in r.json()["detail"]
        victim.stop(signal.SIGKILL)
        t0 = time.monotonic()
        r = c.post(f"/v1/sessions/{victim_sids[0]}/exec", json={"command": "echo $HERE"})
        assert time.monotonic() - t0 < 3
        assert r.status_code in (502, 503)
        detail = r.json()["detail"]
        assert victim_sids[0] in detail and victim.url in detail and "gone" in detail
        r = c.post(f"/v1/sessions/{victim_sids[1]}/exec", json={"command": "true"})
        assert r.status_code in (502, 503) and victim_sids[1] in r.json()["detail"]
        health = c.get("/healthz").json()
        assert health["status"] == "degraded"
        assert {s["url"]: s["up"] for s in health["servers"]} == {victim.url: False, survivor.url: True}
        for sid in sids:  # the survivor's sessions are untouched; free one slot there
            if sid not in victim_sids:
                assert c.post(f"/v1/sessions/{sid}/exec", json={"command": "echo $HERE"}).json()["stdout"] == "1\n"
                assert c.delete(f"/v1/sessions/{sid}").status_code == 204
        new = [c.post("/v1/sessions", json={}) for _ in range(3)]
        assert [r.status_code for r in new] == [201, 201, 429]          # all on the survivor (cap 2)
        assert all(survivor.url.encode() in _payload(r.json()["session_id"]) for r in new[:2])
        assert server_sessions(survivor.url) == 2
        # the dead server comes back (restarted: its old sessions are gone) and takes new sessions again
        servers[0] = victim = start_server(tmp_path, "s0-again", max_sessions=2, port=int(victim.url.rsplit(":", 1)[1]))
        deadline = time.monotonic() + 10
        while not all(s["up"] for s in c.get("/healthz").json()["servers"]) and time.monotonic() < deadline:
            time.sleep(0.1)
        r = c.post("/v1/sessions", json={})
        assert r.status_code == 201 and _payload(r.json()["session_id"]).startswith(victim.url.encode())
        r = c.post(f"/v1/sessions/{victim_sids[0]}/exec", json={"command": "true"})
        assert r.status_code == 404 and victim_sids[0] in r.json()["detail"] and "restarted" in r.json()["detail"]
    finally:
        c.close()
        for p in [gw, *servers]:
            p.stop()


def _payload(session_id: str) -> bytes:
    """The (unsigned, readable) server part of a gateway session id."""
    import base64

    payload = session_id.split(".")[1]
    return base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
