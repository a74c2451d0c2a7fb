"""Load benchmark of the sandbox service: N sandbox servers behind the API gateway, all local.

    .venv/bin/python scripts/bench_sandbox.py [--sessions 64] [--commands 20] [--think-s 0.5] [--servers 2]
                                              [--phase-cap-s 60] [--json OUT]

Run it alone on the machine: the servers, the gateway, every sandbox and this client share the
same cores, so anything else running moves the numbers (it prints the load average at the start
and at the end). It prints numbers; it is not a test (it exits 1 only if an answer was wrong or a
call failed).

It starts `--servers` sandbox servers (`python -m parkrl.sandbox.server`, bubblewrap isolation) and
the gateway (`python -m parkrl.gateway`) as subprocesses on 127.0.0.1, ports from port 0, with a
server token and a run token generated into a private temp dir (never printed), and stops them,
and everything they started, at the end, on error and on Ctrl-C / SIGTERM. Then:

1. "direct": one session on server 0 and one through the gateway, 200 trivial `true` execs each,
   alternating (so both see the same background load): p50/p99 of each, and the gateway's added
   latency.
2. "idle memory": opens `--sessions` sessions through the gateway, waits ~2 s, and sums the memory
   of the gateway + servers including all their descendants (bwrap, the in-sandbox runner and the
   one persistent bash it keeps per session):
   RSS (double-counts shared pages), and PSS/USS from memory_full_info; also the gateway and the
   servers alone, and the same with no session open (the per-session cost is the difference).
3. "closed loop": `--sessions` sessions created at once, then each runs `--commands` commands back
   to back, all sessions at once. Command k of session s is
   `echo s:k >> log; tail -n1 log; wc -l < log`, whose answer must be "s:k\\nk+1\\n" (shell state
   persists, commands run in order); every answer is checked and mismatches are printed.
4. "paced": the same, but each session first waits a think time (`--think-s`, jittered +-50% with a
   fixed seed) before each of its commands, as an RL rollout does while the model generates its
   next turn: offered load ~ sessions / think_s commands per second.

Each load phase stops starting commands after `--phase-cap-s` and reports how many completed.
Latencies are client-side (this process), in ms: p50/p90/p99/max. CPU seconds used by the gateway,
the servers (their own Python processes), the sandboxes (the servers' reaped children: counted once a
session is closed, so measured after the phase's closes) and this client are printed per phase.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from parkrl.sandbox.client import AsyncSandboxClient, SandboxClient

REPO = Path(__file__).resolve().parents[1]
_URL = re.compile(r"listening on (http://[0-9.]+:\d+)")
MB = 1 << 20


# ----------------------------------------------------------------------------- the services


@dataclass
class Service:
    name: str
    popen: subprocess.Popen
    log: Path
    url: str = ""
    descendants: list[psutil.Process] = field(default_factory=list)

    @property
    def proc(self) -> psutil.Process:
        return psutil.Process(self.popen.pid)


class Fleet:
    """N sandbox servers and a gateway in front of them; `stop()` ends them and all their descendants."""

    def __init__(self, n_servers: int, sessions: int):
        self.tmp = Path(tempfile.mkdtemp(prefix="parkrl-bench-sandbox-"))
        os.chmod(self.tmp, 0o700)
        self.server_token = secrets.token_urlsafe(32)
        self.run_token = secrets.token_urlsafe(32)
        self._secrets = (self.server_token, self.run_token)
        self._write("server-token", self.server_token)
        self._write("tokens.json", json.dumps({"bench": self.run_token}))
        self._write("secret", secrets.token_urlsafe(32))
        self.n_servers, self.sessions = n_servers, sessions
        self.servers: list[Service] = []
        self.gateway: Service | None = None

    def _write(self, name: str, text: str) -> None:
        fd = os.open(self.tmp / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(text)

    def _spawn(self, name: str, args: list[str]) -> Service:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as out:  # the child keeps its own copy of the fd
            popen = subprocess.Popen([sys.executable, *args], stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                     stdin=subprocess.DEVNULL, start_new_session=True,  # Ctrl-C reaches us only
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        return Service(name, popen, log)

    def _wait_url(self, svc: Service, timeout_s: float = 90.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            m = _URL.search(svc.log.read_text(errors="replace"))
            if m:
                svc.url = m.group(1)
                return
            if svc.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{svc.name} did not start (exit {svc.popen.poll()}):\n{self.log_tail(svc)}")

    def log_tail(self, svc: Service, lines: int = 25) -> str:
        text = "\n".join(svc.log.read_text(errors="replace").splitlines()[-lines:])
        for s in self._secrets:
            text = text.replace(s, "***")
        return text

    def start(self) -> None:
        rng = random.SystemRandom()
        bases = rng.sample(range(130_000), self.n_servers)  # own host-uid range per server (we run as root)
        max_sessions = self.sessions + 4  # room for the direct session and a little slack
        for i, b in enumerate(bases):
            self.servers.append(self._spawn(f"server{i}", [
                "-m", "parkrl.sandbox.server", "--port", "0", "--token-file", str(self.tmp / "server-token"),
                "--max-sessions", str(max_sessions), "--uid-base", str(2_010_000_000 + b * 1000),
                "--log-level", "info"]))  # info: it logs its URL
        for s in self.servers:
            self._wait_url(s)
        self.gateway = self._spawn("gateway", [
            "-m", "parkrl.gateway", "--port", "0", "--servers", ",".join(s.url for s in self.servers),
            "--tokens-file", str(self.tmp / "tokens.json"), "--server-token-file", str(self.tmp / "server-token"),
            "--secret-file", str(self.tmp / "secret"), "--max-sessions-per-run", str(max_sessions),
            "--max-sessions", str(max_sessions * self.n_servers)])
        self._wait_url(self.gateway)
        import httpx

        deadline = time.monotonic() + 30
        h: object = None
        while True:  # until the gateway has seen every server up
            try:
                h = httpx.get(f"{self.gateway.url}/healthz", timeout=5).json()
                if all(s.get("up") for s in h.get("servers", [])) and len(h.get("servers", [])) == self.n_servers:
                    return
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateway does not see all servers up: {h}")
            time.sleep(0.1)

    @property
    def services(self) -> list[Service]:
        return [*([self.gateway] if self.gateway else []), *self.servers]

    def stop(self) -> None:
        """SIGTERM (graceful: the servers close their sandboxes), then SIGKILL; then kill any descendant
        (seen just before the stop) still alive. psutil checks a process's start time, so a reused pid
        is never hit."""
        for svc in self.services:
            try:
                svc.descendants = svc.proc.children(recursive=True)
            except psutil.Error:
                svc.descendants = []
        for svc in self.services:  # gateway first
            if svc.popen.poll() is None:
                svc.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for svc in self.services:
            try:
                svc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.popen.kill()
                svc.popen.wait(5)
        left = [p for svc in self.services for p in svc.descendants if p.is_running()]
        for p in left:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(left, timeout=5)

    def cleanup(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


# ----------------------------------------------------------------------------- measuring


def percentile(xs: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (q in 0..1); xs not empty."""
    s = sorted(xs)
    pos = (len(s) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def lat_summary(xs: list[float]) -> dict:
    """n and p50/p90/p99/max in ms (None when there is no sample)."""
    ms = [x * 1000 for x in xs]
    if not ms:
        return {"n": 0, "p50_ms": None, "p90_ms": None, "p99_ms": None, "max_ms": None}
    return {"n": len(ms), "p50_ms": percentile(ms, 0.5), "p90_ms": percentile(ms, 0.9),
            "p99_ms": percentile(ms, 0.99), "max_ms": max(ms)}


def _mem_of(procs: list[psutil.Process]) -> dict:
    rss = uss = pss = 0
    n, full = 0, True
    for p in procs:
        try:
            with p.oneshot():
                try:
                    m = p.memory_full_info()
                    uss += m.uss
                    pss += getattr(m, "pss", 0)
                except (psutil.AccessDenied, AttributeError):
                    full = False
                    m = p.memory_info()
                rss += m.rss
                n += 1
        except psutil.NoSuchProcess:
            pass
    out = {"processes": n, "rss_mb": rss / MB}
    if full:
        out.update(pss_mb=pss / MB, uss_mb=uss / MB)
    return out


def memory(fleet: Fleet) -> dict:
    roots = {svc.name: svc.proc for svc in fleet.services}
    desc: list[psutil.Process] = []
    for p in roots.values():
        try:
            desc += p.children(recursive=True)
        except psutil.NoSuchProcess:
            pass
    by_name: dict[str, int] = {}
    for p in desc:
        try:
            by_name[p.name()] = by_name.get(p.name(), 0) + 1
        except psutil.Error:
            pass
    return {
        "total": _mem_of([*roots.values(), *desc]),
        "services_alone": _mem_of(list(roots.values())),
        "gateway_alone": _mem_of([roots["gateway"]]),
        "servers_alone": _mem_of([p for n, p in roots.items() if n != "gateway"]),
        "descendants": _mem_of(desc),
        "descendants_by_name": by_name,
    }


class CpuMeter:
    """CPU seconds (user+system) of the gateway, the server processes and this client over a phase."""

    def __init__(self, fleet: Fleet):
        self.fleet = fleet
        self.t0 = self._now()

    def _now(self) -> dict:
        def cpu(svcs: list[Service], children: bool = False) -> float:
            total = 0.0
            for s in svcs:
                try:
                    t = s.proc.cpu_times()
                    total += (t.children_user + t.children_system) if children else (t.user + t.system)
                except psutil.Error:
                    pass
            return total

        me = psutil.Process().cpu_times()
        return {"gateway_cpu_s": cpu([self.fleet.gateway]), "servers_cpu_s": cpu(self.fleet.servers),
                "sandboxes_cpu_s": cpu(self.fleet.servers, children=True), "client_cpu_s": me.user + me.system}

    def done(self) -> dict:
        t1 = self._now()
        return {k: round(t1[k] - self.t0[k], 2) for k in t1}


# ----------------------------------------------------------------------------- phases


def phase_direct(fleet: Fleet, n: int) -> dict:
    """n trivial execs straight to server 0 and n through the gateway, alternating."""
    lat: dict[str, list[float]] = {"direct": [], "gateway": []}
    errors = 0
    with SandboxClient(fleet.servers[0].url, fleet.server_token, timeout_s=60) as direct, \
            SandboxClient(fleet.gateway.url, fleet.run_token, timeout_s=60) as gw:
        sids = {"direct": direct.create_session(), "gateway": gw.create_session()}
        clients = {"direct": direct, "gateway": gw}
        try:
            for i in range(n + 5):  # 5 warm-up rounds not counted
                for name, c in clients.items():
                    t = time.perf_counter()
                    r = c.exec(sids[name], "true")
                    dt = time.perf_counter() - t
                    if r.exit_code != 0:
                        errors += 1
                    if i >= 5:
                        lat[name].append(dt)
        finally:
            for name, c in clients.items():
                c.close_session(sids[name])
    out = {name: lat_summary(v) for name, v in lat.items()}
    out["gateway_added_p50_ms"] = out["gateway"]["p50_ms"] - out["direct"]["p50_ms"]  # n >= 1: never None
    out["gateway_added_p99_ms"] = out["gateway"]["p99_ms"] - out["direct"]["p99_ms"]
    out["errors"] = errors
    return out


async def _open(sb: AsyncSandboxClient, n: int) -> tuple[list[str | None], list[float], list[str]]:
    lat: list[float] = []
    errors: list[str] = []

    async def one() -> str | None:
        t = time.perf_counter()
        try:
            sid = await sb.create_session()
        except Exception as e:  # noqa: BLE001 - counted and printed
            errors.append(f"create: {type(e).__name__}: {e}"[:300])
            return None
        lat.append(time.perf_counter() - t)
        return sid

    return list(await asyncio.gather(*(one() for _ in range(n)))), lat, errors


async def _close(sb: AsyncSandboxClient, sids: list[str | None]) -> list[str]:
    res = await asyncio.gather(*(sb.close_session(s) for s in sids if s), return_exceptions=True)
    return [f"close: {type(e).__name__}: {e}"[:300] for e in res if isinstance(e, BaseException)]


async def phase_idle_memory(fleet: Fleet, n: int, wait_s: float = 2.0) -> dict:
    before = memory(fleet)
    async with AsyncSandboxClient(fleet.gateway.url, fleet.run_token, timeout_s=120) as sb:
        sids, _, errors = await _open(sb, n)
        try:
            await asyncio.sleep(wait_s)
            during = memory(fleet)
        finally:
            errors += await _close(sb, sids)
    opened = sum(1 for s in sids if s)
    per = {k: (during["total"][k] - before["total"][k]) / max(1, opened)
           for k in during["total"] if k.endswith("_mb")}
    return {"sessions_open": opened, "no_sessions": before, "with_sessions": during,
            "per_session_mb": per, "errors": errors}


async def phase_load(fleet: Fleet, n: int, commands: int, think_s: float, seed: int, cap_s: float) -> dict:
    """n sessions x `commands` commands, all sessions at once; think time before each command (0: closed loop)."""
    cpu = CpuMeter(fleet)
    t_phase = time.perf_counter()
    exec_lat: list[float] = []
    mismatches: list[str] = []
    errors: list[str] = []
    skipped = 0
    first_exec = [float("inf")]
    last_exec = [0.0]
    async with AsyncSandboxClient(fleet.gateway.url, fleet.run_token, timeout_s=120) as sb:
        sids, create_lat, cerr = await _open(sb, n)
        errors += cerr
        t_exec0 = time.perf_counter()
        deadline = t_exec0 + cap_s

        async def session(s: int, sid: str) -> None:
            nonlocal skipped
            rng = random.Random(seed * 1_000_003 + s)
            for k in range(commands):
                if think_s > 0:
                    await asyncio.sleep(think_s * rng.uniform(0.5, 1.5))
                if time.perf_counter() > deadline:
                    skipped += commands - k
                    return
                t = time.perf_counter()
                first_exec[0] = min(first_exec[0], t)
                try:
                    r = await sb.exec(sid, f"echo {s}:{k} >> log; tail -n1 log; wc -l < log")
                except Exception as e:  # noqa: BLE001 - counted; the session's log no longer matches k, stop it
                    errors.append(f"exec s={s} k={k}: {type(e).__name__}: {e}"[:300])
                    skipped += commands - k - 1
                    return
                done = time.perf_counter()
                last_exec[0] = max(last_exec[0], done)
                exec_lat.append(done - t)
                want = f"{s}:{k}\n{k + 1}\n"
                if r.stdout != want or r.exit_code != 0 or r.timed_out:
                    mismatches.append(f"s={s} k={k}: want {want!r}, got {r.stdout!r} exit {r.exit_code} "
                                      f"timed_out {r.timed_out} stderr {r.stderr[:100]!r}")

        try:
            await asyncio.gather(*(session(s, sid) for s, sid in enumerate(sids) if sid))
        finally:
            t_close = time.perf_counter()
            errors += await _close(sb, sids)
            close_s = time.perf_counter() - t_close
    wall = time.perf_counter() - t_phase
    exec_wall = max(0.0, last_exec[0] - first_exec[0]) if exec_lat else 0.0
    return {
        "sessions": n, "commands_per_session": commands, "think_s": think_s, "phase_cap_s": cap_s,
        "sessions_created": sum(1 for s in sids if s),
        "execs_done": len(exec_lat), "execs_planned": n * commands, "execs_skipped_by_cap_or_error": skipped,
        "capped": time.perf_counter() > deadline and skipped > 0,
        "mismatches": len(mismatches), "mismatch_examples": mismatches[:10],
        "errors": len(errors), "error_examples": errors[:10],
        "create": lat_summary(create_lat), "exec": lat_summary(exec_lat),
        "create_all_s": t_exec0 - t_phase,
        "exec_wall_s": exec_wall, "throughput_execs_per_s": len(exec_lat) / exec_wall if exec_wall else 0.0,
        "offered_execs_per_s": (n / think_s) if think_s > 0 else None,
        "close_all_s": close_s, "wall_s": wall, "cpu": cpu.done(),
    }


# ----------------------------------------------------------------------------- output


def _row(name: str, s: dict, extra: str = "") -> str:
    keys = ("p50_ms", "p90_ms", "p99_ms", "max_ms")
    cells = "".join(f"{'-' if s[k] is None else format(s[k], '.1f'):>9}" for k in keys)
    return f"{name:<22}{s['n']:>6}{cells}  {extra}".rstrip()


def _mem_line(name: str, m: dict) -> str:
    full = f"  PSS {m['pss_mb']:8.1f}  USS {m['uss_mb']:8.1f}" if "pss_mb" in m else "  (PSS/USS unavailable)"
    return f"{name:<28}{m['processes']:>5} procs  RSS {m['rss_mb']:8.1f}{full}  MiB"


def print_report(res: dict) -> None:
    print("\n=== sandbox service benchmark ===")
    cfg = res["config"]
    print(f"servers {cfg['servers']}, sessions {cfg['sessions']}, commands {cfg['commands']}, think {cfg['think_s']} s,"
          f" cpus {cfg['cpu_count']}, load avg start {cfg['loadavg_start']}, end {res.get('loadavg_end')}")
    print(f"\n{'latency (ms)':<22}{'n':>6}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}")
    d = res.get("direct")
    if d:
        print(_row("true, direct server", d["direct"]))
        print(_row("true, via gateway", d["gateway"],
                   f"gateway adds p50 {d['gateway_added_p50_ms']:+.1f} / p99 {d['gateway_added_p99_ms']:+.1f} ms"))
    for key, label in (("closed_loop", "closed"), ("paced", "paced")):
        p = res.get(key)
        if not p:
            continue
        print(_row(f"{label}: create", p["create"],
                   f"{p['sessions_created']}/{p['sessions']} created in {p['create_all_s']:.2f} s"))
        offered = f", offered ~{p['offered_execs_per_s']:.0f}/s" if p["offered_execs_per_s"] else ""
        print(_row(f"{label}: exec", p["exec"],
                   f"{p['execs_done']}/{p['execs_planned']} done, {p['throughput_execs_per_s']:.1f} execs/s{offered}"))
    print()
    for key, label in (("closed_loop", "closed loop"), ("paced", "paced")):
        p = res.get(key)
        if not p:
            continue
        cap = " (CAPPED by --phase-cap-s)" if p["capped"] else ""
        print(f"{label:<12} wall {p['wall_s']:6.2f} s (creates {p['create_all_s']:.2f}, execs {p['exec_wall_s']:.2f}, "
              f"closes {p['close_all_s']:.2f}); mismatches {p['mismatches']}, errors {p['errors']}{cap}; "
              f"cpu s: gateway {p['cpu']['gateway_cpu_s']}, servers {p['cpu']['servers_cpu_s']}, "
              f"sandboxes {p['cpu']['sandboxes_cpu_s']}, client {p['cpu']['client_cpu_s']}")
    m = res.get("idle_memory")
    if m:
        print(f"\nidle memory, {m['sessions_open']} sessions open (after ~2 s), MiB:")
        w, b = m["with_sessions"], m["no_sessions"]
        print(_mem_line("total (gw+servers+desc.)", w["total"]))
        print(_mem_line("  gateway+servers alone", w["services_alone"]))
        print(_mem_line("    gateway alone", w["gateway_alone"]))
        print(_mem_line("    servers alone", w["servers_alone"]))
        print(_mem_line("  descendants", w["descendants"]) + f"  {w['descendants_by_name']}")
        print(_mem_line("total, no session open", b["total"]))
        per = m["per_session_mb"]
        print("per session (difference / sessions): " + ", ".join(f"{k[:-3].upper()} {v:.2f}" for k, v in per.items())
              + " MiB")
    problems = res.get("problems", 0)
    print(f"\nmismatches + errors: {problems}")


# ----------------------------------------------------------------------------- main


def _sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=64)
    ap.add_argument("--commands", type=int, default=20)
    ap.add_argument("--think-s", type=float, default=0.5, help="mean think time of the paced phase (+-50%% jitter)")
    ap.add_argument("--servers", type=int, default=2)
    ap.add_argument("--direct-n", type=int, default=200, help="execs of the direct/gateway baseline, each")
    ap.add_argument("--phase-cap-s", type=float, default=60.0,
                    help="a load phase starts no command after this many seconds of execs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="OUT", help="write all numbers to this JSON file")
    args = ap.parse_args()
    if min(args.sessions, args.commands, args.servers, args.direct_n) < 1 or args.think_s < 0:
        ap.error("--sessions, --commands, --servers, --direct-n must be >= 1 and --think-s >= 0")

    signal.signal(signal.SIGTERM, _sigterm)
    res: dict = {"config": {"servers": args.servers, "sessions": args.sessions, "commands": args.commands,
                            "think_s": args.think_s, "direct_n": args.direct_n, "phase_cap_s": args.phase_cap_s,
                            "seed": args.seed, "cpu_count": os.cpu_count(),
                            "loadavg_start": [round(x, 2) for x in os.getloadavg()]}}
    fleet = Fleet(args.servers, args.sessions)
    t0 = time.perf_counter()
    failed = False
    try:
        print(f"starting {args.servers} sandbox servers and the gateway ...", flush=True)
        fleet.start()
        res["startup_s"] = time.perf_counter() - t0
        print(f"  up in {res['startup_s']:.1f} s", flush=True)
        print(f"direct baseline: {args.direct_n} x `true` direct and via gateway ...", flush=True)
        res["direct"] = phase_direct(fleet, args.direct_n)
        print(f"idle memory: {args.sessions} sessions ...", flush=True)
        res["idle_memory"] = asyncio.run(phase_idle_memory(fleet, args.sessions))
        print(f"closed loop: {args.sessions} sessions x {args.commands} commands ...", flush=True)
        res["closed_loop"] = asyncio.run(phase_load(fleet, args.sessions, args.commands, 0.0, args.seed,
                                                    args.phase_cap_s))
        print(f"paced: {args.sessions} sessions x {args.commands} commands, think {args.think_s} s +-50% ...",
              flush=True)
        res["paced"] = asyncio.run(phase_load(fleet, args.sessions, args.commands, args.think_s, args.seed,
                                              args.phase_cap_s))
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - reported, then the fleet is stopped
        failed = True
        print(f"\nbenchmark aborted: {type(e).__name__}: {e}", file=sys.stderr)
        for svc in fleet.services:
            if svc.popen.poll() is not None:
                print(f"--- {svc.name} exited {svc.popen.returncode}, log tail:\n{fleet.log_tail(svc)}",
                      file=sys.stderr)
    finally:
        print("stopping the servers and the gateway ...", flush=True)
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}  # bounded: <= ~30 s
        try:
            fleet.stop()
            fleet.cleanup()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    res["total_s"] = time.perf_counter() - t0
    res["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    problems = res.get("direct", {}).get("errors", 0) + len(res.get("idle_memory", {}).get("errors", []))
    for key in ("closed_loop", "paced"):
        if key in res:
            p = res[key]
            problems += p["mismatches"] + p["errors"]
            for line in p["mismatch_examples"] + p["error_examples"]:
                print(f"{key}: {line}")
    res["problems"] = problems
    print_report(res)
    print(f"total {res['total_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))
        print(f"wrote {args.json}")
    return 1 if failed or problems else 0


if __name__ == "__main__":
    sys.exit(main())
