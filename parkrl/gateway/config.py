"""The gateway's settings (one dataclass; `python -m parkrl.gateway --help` documents the flags)."""
from __future__ import annotations

from dataclasses import dataclass, field

from parkrl.gateway.auth import RunTokens
from parkrl.gateway.egress import parse_host


@dataclass
class GatewayConfig:
    """Everything `create_app` needs. `run_tokens=None` means --insecure-no-auth."""

    servers: list[str]
    run_tokens: RunTokens | None
    secret: bytes
    secret_persistent: bool = True
    server_token: str | None = None
    tokens_file: str | None = None          # re-read when its mtime changes
    max_sessions_per_run: int = 64
    max_sessions: int = 1024
    retry_after_s: int = 2                  # Retry-After on the gateway's own 429s
    health_interval_s: float = 2.0
    health_timeout_s: float = 2.0
    down_after: int = 2                     # consecutive failed checks (connection refused: at once)
    call_timeout_s: float = 25.0            # deadline of non-exec calls (< the client's 30 s)
    exec_margin_s: float = 12.0             # exec deadline = timeout_s + margin (> server kill grace 10 s,
                                            # < the client's 15 s, so the client sees the 504)
    default_exec_timeout_s: float = 10.0    # the server's default timeout_s
    max_exec_timeout_s: float = 300.0       # the servers' cap on timeout_s (a larger one is waited for this long)
    default_idle_timeout_s: float = 900.0   # the servers' idle reaping, for the gateway's own bookkeeping
    max_body_bytes: int = 64 << 20
    egress_hosts: list[str] = field(default_factory=list)  # host:port POST /v1/fetch may get (empty: no egress)
    fetch_max_bytes: int = 2 << 20          # cap on a fetch's max_bytes (and its default)
    fetch_timeout_s: float = 10.0           # cap on a fetch's timeout_s (and its default)

    def __post_init__(self) -> None:
        if self.max_sessions_per_run < 1 or self.max_sessions < 1:
            raise ValueError("--max-sessions-per-run and --max-sessions must be >= 1")
        if self.health_interval_s <= 0 or self.health_timeout_s <= 0 or self.down_after < 1:
            raise ValueError("health interval/timeout must be > 0 and --down-after >= 1")
        if self.call_timeout_s <= 0 or self.exec_margin_s < 0:
            raise ValueError("--call-timeout-s must be > 0 and --exec-margin-s >= 0")
        if self.fetch_max_bytes < 1 or self.fetch_timeout_s <= 0:
            raise ValueError("--fetch-max-kb and --fetch-timeout-s must be > 0")
        for entry in self.egress_hosts:
            parse_host(entry)  # ValueError naming the entry
