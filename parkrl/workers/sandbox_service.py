"""The sandbox service a run starts for itself (`sandbox.servers=N`): N sandbox servers and one
gateway in front of them, each a process owned by a worker of the `sandbox` role, placed by
`resources.sandbox` (CPU-only nodes). The trainer's tools then talk only to the gateway.

Every secret is made here, per run, and written with mode 0600 under `<output_dir>/sandbox/`:
the run's bearer token (the tools present it to the gateway), the token the gateway presents to
the servers, and the key that signs session ids (so a restarted gateway keeps routing them). No
token is ever logged or put in the config. On one node the services listen on 127.0.0.1; with
`trainer.ray_address` set (a multi-node cluster) they listen on their node's address.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from parkrl.config import Config, ConfigError, RoleResources, ServiceResources
from parkrl.sandbox.client import SandboxError
from parkrl.tools.sandboxed import endpoint_for, verify
from parkrl.workers.group import WorkerGroup

_LISTENING = re.compile(r"listening on (http://\S+)")
UID_SPAN = 10_000  # host uids each sandbox server may use for its slots (see `--uid-base`)


class ServiceProcess:
    """A worker that runs one service (`python -m <module> ...`) as its child process, returns the
    URL it listens on, and stops it on shutdown (the child also dies with this worker)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: subprocess.Popen | None = None
        self.log_path = self.url = ""

    def start(self, module: str, args: list[str], bind_host: str, start_timeout_s: float, port: int = 0) -> str:
        """Start the service on `bind_host` and `port` (0: a free one); returns its URL once it listens."""
        self._how = (module, args, bind_host, start_timeout_s)
        fd, self.log_path = tempfile.mkstemp(prefix=f"parkrl-{self.name}-", suffix=".log")
        with os.fdopen(fd, "w") as log:  # the child has its own copy
            self.proc = subprocess.Popen([sys.executable, "-m", module, "--host", bind_host, "--port", str(port),
                                          *args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                                         preexec_fn=_die_with_parent)
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            text = Path(self.log_path).read_text(errors="replace")
            found = _LISTENING.search(text)
            if found:
                self.url = found.group(1)
                return self.url
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} ({module}) exited with code {self.proc.returncode} at start:\n"
                                   f"{text[-2000:]}")
            time.sleep(0.05)
        self.shutdown()
        raise TimeoutError(f"{self.name} ({module}) did not listen within {start_timeout_s:.0f} s; its log: "
                           f"{self.log_path}")

    def restart(self) -> str:
        """Stop the service and start it again the same way, on the same port (its clients reconnect)."""
        module, args, bind_host, start_timeout_s = self._how
        port = int(self.url.rsplit(":", 1)[1])
        self.shutdown()
        return self.start(module, args, bind_host, start_timeout_s, port)

    def listening_url(self) -> str:
        return self.url

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pid(self) -> int:
        return self.proc.pid if self.proc else -1

    def shutdown(self) -> None:
        """Stop the service (SIGTERM, then SIGKILL after 10 s) and delete its log."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.log_path:
            Path(self.log_path).unlink(missing_ok=True)


@dataclass
class ServiceFleet:
    """A started service: the gateway URL, the run's token file, and the workers that own it."""

    url: str
    token_file: str
    servers: WorkerGroup
    gateway: WorkerGroup

    def shutdown(self) -> None:
        """Gateway first (no new sessions), then the servers (every sandbox is killed with them)."""
        for group in (self.gateway, self.servers):
            try:
                group.call("shutdown")
            except Exception as e:  # keep shutting the others down
                print(f"[parkrl] shutting down {group.role}: {e}", file=sys.stderr, flush=True)
            group.shutdown()


SandboxService = ServiceFleet


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL when the worker that started it dies (Linux prctl)."""
    import ctypes
    import signal

    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _write_secret(path: Path, text: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return str(path)


def start_sandbox_service(cfg: Config, run_dir: Path) -> ServiceFleet:
    """Start `sandbox.servers` sandbox servers and a gateway in front of them for this run."""
    s = cfg.sandbox
    uid_base = 2_000_000_000 + secrets.randbelow(1000) * 10 * UID_SPAN  # apart from other runs' servers
    return start_service_fleet(
        cfg, run_dir / "sandbox", "sandbox", "parkrl.sandbox.server", cfg.resources.sandbox,
        [["--max-sessions", str(s.sessions_per_server), "--uid-base", str(uid_base + rank * UID_SPAN), *s.server_args]
         for rank in range(s.servers)],
        ["--max-sessions-per-run", str(s.servers * s.sessions_per_server),
         "--max-sessions", str(s.servers * s.sessions_per_server),
         *(["--egress-hosts", ",".join(s.egress_hosts)] if s.egress_hosts else [])], s.start_timeout_s)


def start_service_fleet(cfg: Config, folder: Path, name: str, module: str, placement: ServiceResources,
                        server_args: list[list[str]], gateway_args: list[str], start_timeout_s: float) -> ServiceFleet:
    """Start one `python -m module` server per entry of `server_args` (each as a worker of role
    `name`, placed by `placement`) and a gateway in front of them, with fresh secrets under `folder`."""
    t = cfg.trainer
    run_id = "run"
    server_token = _write_secret(folder / "server_token", secrets.token_urlsafe(32))
    run_token = secrets.token_urlsafe(32)
    tokens = _write_secret(folder / "tokens.json", json.dumps({run_id: run_token}))
    token_file = _write_secret(folder / "run_token", run_token)
    secret = _write_secret(folder / "gateway_secret", secrets.token_urlsafe(32))
    bind = "127.0.0.1" if t.runtime == "local" or not t.ray_address else _node_ip()
    servers = WorkerGroup(name, ServiceProcess, _role(placement, len(server_args)), t.runtime, t.worker_timeout_s,
                          lambda rank: (f"{name}{rank}",))
    gateway = None
    try:
        urls = servers.call_each("start", [(module, ["--token-file", server_token, *a], bind, start_timeout_s)
                                           for a in server_args])
        gateway = WorkerGroup(f"{name}_gateway", ServiceProcess, _role(placement, 1), t.runtime, t.worker_timeout_s,
                              lambda rank: (f"{name}-gateway",))
        url = gateway.call("start", "parkrl.gateway",
                           ["--servers", ",".join(urls), "--tokens-file", tokens, "--server-token-file", server_token,
                            "--secret-file", secret, *gateway_args], bind, start_timeout_s)[0]
    except BaseException:
        for group in (gateway, servers):
            if group is not None:
                group.shutdown()
        raise
    print(f"[parkrl] {name} service: gateway {url} in front of {len(urls)} server(s) {', '.join(urls)}", flush=True)
    return ServiceFleet(url, token_file, servers, gateway)


def _role(r: ServiceResources, n: int) -> RoleResources:
    """`n` workers placed as `r` (resources.sandbox or resources.env) says (CPU only)."""
    return RoleResources(num_workers=n, cpus_per_worker=r.cpus_per_worker, custom_resources=dict(r.custom_resources),
                         node_labels=dict(r.node_labels), runtime_env=dict(r.runtime_env))


def _node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def check_sandbox(cfg: Config, needs_sandbox: bool) -> None:
    """Before any worker starts: an environment whose tools need the sandbox service has one, and a
    given `sandbox.url` answers and takes the token (errors name the URL and the key to fix)."""
    s = cfg.sandbox
    if needs_sandbox and not (s.servers or s.url):
        raise ConfigError(f"env.cls={cfg.env.cls!r} uses the sandbox service (its tools run commands or code): "
                          f"set sandbox.servers=N to start one for the run, or sandbox.url and sandbox.token_file")
    if s.url:
        try:
            verify(endpoint_for(s.url, s.token_file, s.call_timeout_s))
        except SandboxError as e:
            raise ConfigError(str(e)) from e


@contextmanager
def sandbox_for_run(cfg: Config, run_dir: Path) -> Iterator[Config]:
    """The run's config with `sandbox.url`/`sandbox.token_file` pointing at its service: the one
    it starts (`sandbox.servers=N`, stopped on exit) or the one it was given."""
    if not cfg.sandbox.servers:
        yield cfg
        return
    service = start_sandbox_service(cfg, run_dir)
    try:
        verify(endpoint_for(service.url, service.token_file, cfg.sandbox.call_timeout_s))
        yield replace(cfg, sandbox=replace(cfg.sandbox, url=service.url, token_file=service.token_file))
    finally:
        service.shutdown()
