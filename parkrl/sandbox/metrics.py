"""Prometheus metrics of one sandbox server (its own registry, served at GET /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class SandboxMetrics:
    """Requests by route/method/status, latency, sessions, rejections, exec outcomes."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("parkrl_sandbox_requests", "HTTP requests by route template, method and status",
                                ["route", "method", "status"], registry=r)
        self.latency = Histogram("parkrl_sandbox_request_seconds", "HTTP request latency by route template",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.sessions_active = Gauge("parkrl_sandbox_sessions_active", "Open sessions", registry=r)
        self.slots_in_use = Gauge("parkrl_sandbox_slots_in_use", "Sandboxes running (sessions and /run_code)",
                                  registry=r)
        self.session_events = Counter("parkrl_sandbox_session_events",
                                      "Session lifecycle events (created, closed, reaped, broken)", ["event"],
                                      registry=r)
        self.rejections = Counter("parkrl_sandbox_rejections", "Requests refused (session_cap, auth, body_too_large)",
                                  ["reason"], registry=r)
        self.exec_seconds = Histogram("parkrl_sandbox_exec_seconds", "Command run time inside the sandbox",
                                      buckets=LATENCY_BUCKETS, registry=r)
        self.exec_outcomes = Counter("parkrl_sandbox_exec", "Commands by outcome (ok, nonzero, timeout, truncated)",
                                     ["outcome"], registry=r)

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
