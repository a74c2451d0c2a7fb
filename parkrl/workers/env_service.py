"""The environment service of a run with `env.remote=true`: `env.servers=N` environment servers
(parkrl.envs.server) and a gateway in front of them, started like the sandbox service
(parkrl.workers.sandbox_service) and placed by `resources.env` (CPU nodes); or the running
service at `env.url`. Either way it is checked before step 1: it answers, takes the run's token
and can build `env.cls(**env.args)`.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from parkrl.config import Config, ConfigError
from parkrl.envs.remote import EnvEndpoint, EnvServiceError, check_remote, endpoint_for
from parkrl.workers.sandbox_service import ServiceFleet, start_service_fleet

STEP_MARGIN_S = 10.0  # the gateway's deadline for a step call: env.step_timeout_s + this


def env_endpoint(cfg: Config) -> EnvEndpoint:
    """The run's environment service (env.url, env.token_file) as the episodes call it."""
    e = cfg.env
    return endpoint_for(e.url, e.token_file, cfg.sandbox.call_timeout_s, e.step_timeout_s)


def start_env_service(cfg: Config, run_dir: Path) -> ServiceFleet:
    """Start `env.servers` environment servers and their gateway for this run."""
    e, sb = cfg.env, cfg.sandbox
    args = ["--max-sessions", str(e.sessions_per_server), *[a for m in cfg.trainer.imports for a in ("--import", m)]]
    if sb.url:  # the environments' tools (terminal) reach the run's sandbox service
        args += ["--sandbox-url", sb.url, "--sandbox-token-file", sb.token_file]
    total = str(e.servers * e.sessions_per_server)
    return start_service_fleet(cfg, run_dir / "env", "env", "parkrl.envs.server", cfg.resources.env,
                               [[*args, *e.server_args] for _ in range(e.servers)],
                               ["--max-sessions-per-run", total, "--max-sessions", total,
                                "--call-timeout-s", str(e.step_timeout_s + STEP_MARGIN_S)], sb.start_timeout_s)


def check_env_service(cfg: Config) -> bool:
    """Before step 1: env.url answers, takes env.token_file's token and builds env.cls(**env.args);
    returns whether that environment uses the sandbox service. A ConfigError names what to fix."""
    try:
        return check_remote(env_endpoint(cfg), cfg.env.cls, dict(cfg.env.args))["uses_sandbox"]
    except EnvServiceError as e:
        raise ConfigError(str(e)) from None


@contextmanager
def env_service_for_run(cfg: Config, run_dir: Path) -> Iterator[Config]:
    """The run's config with env.url/env.token_file pointing at its environment service: the one it
    starts (env.remote=true with env.servers=N, stopped on exit) or the one it was given."""
    e = cfg.env
    if not (e.remote and e.servers):
        yield cfg
        return
    fleet = start_env_service(cfg, run_dir)
    try:
        cfg = replace(cfg, env=replace(e, url=fleet.url, token_file=fleet.token_file))
        if check_env_service(cfg) and not cfg.sandbox.url:
            raise ConfigError(f"env.cls={e.cls!r} uses the sandbox service (its tools run commands or code): set "
                              f"sandbox.servers=N to start one for the run, or sandbox.url and sandbox.token_file")
        yield cfg
    finally:
        fleet.shutdown()
