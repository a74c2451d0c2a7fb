"""The gateway's Prometheus metrics (text format at GET /metrics).

- parkrl_gateway_requests_total{route,method,status}         requests answered
- parkrl_gateway_request_latency_seconds{route}              histogram (aggregates across replicas)
- parkrl_gateway_request_latency_quantiles_seconds{route,quantile="0.5"|"0.99"}
                                                             summary over the last `window` requests
- parkrl_gateway_active_sessions                             live sessions (plus creations in flight)
- parkrl_gateway_active_sessions_by_server{server}, ..._by_run{run}
- parkrl_gateway_rejections_total{reason}                    run_cap, total_cap, fleet_full, no_server, unauthorized
- parkrl_gateway_upstream_errors_total{server,kind}          connect, timeout, broken, auth, error (5xx)
- parkrl_gateway_server_up{server}                           1 healthy, 0 down
- parkrl_gateway_fetches_total{outcome}                      POST /v1/fetch: ok, refused, error, timeout
- parkrl_gateway_fetch_bytes_total                           body bytes returned by fetches
Route labels are the route templates (session ids never become labels), so cardinality is fixed.
"""
from __future__ import annotations

import math
import re
from collections import deque
from typing import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
QUANTILES = (0.5, 0.99)
_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)

_ROUTES = [
    (re.compile(r"^/v1/sessions/?$"), "/v1/sessions"),
    (re.compile(r"^/v1/sessions/[^/]+/exec$"), "/v1/sessions/{sid}/exec"),
    (re.compile(r"^/v1/sessions/[^/]+/files$"), "/v1/sessions/{sid}/files"),
    (re.compile(r"^/v1/sessions/[^/]+$"), "/v1/sessions/{sid}"),
    (re.compile(r"^/run_code$"), "/run_code"),
    (re.compile(r"^/v1/fetch$"), "/v1/fetch"),
    (re.compile(r"^/healthz$"), "/healthz"),
    (re.compile(r"^/metrics$"), "/metrics"),
]


def route_label(path: str) -> str:
    """The route template of a request path ("other" for anything unknown)."""
    for pattern, label in _ROUTES:
        if pattern.match(path):
            return label
    return "other"


def quantile(sorted_values: list[float], q: float) -> float:
    """The q-quantile of sorted values (nearest rank)."""
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[k]


class GatewayMetrics:
    """Request, latency, session and rejection metrics in a registry of their own."""

    def __init__(self, sessions: Callable[[], tuple[int, dict[str, int], dict[str, int]]],
                 servers_up: Callable[[], Iterable[tuple[str, bool]]], window: int = 2048) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("parkrl_gateway_requests", "Requests answered by the gateway",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("parkrl_gateway_request_latency_seconds", "Request latency at the gateway",
                                 ["route"], buckets=_BUCKETS, registry=self.registry)
        self.rejections = Counter("parkrl_gateway_rejections", "Requests refused by the gateway", ["reason"],
                                  registry=self.registry)
        self.upstream_errors = Counter("parkrl_gateway_upstream_errors", "Failed calls to sandbox servers",
                                       ["server", "kind"], registry=self.registry)
        self.fetches = Counter("parkrl_gateway_fetches", "Egress fetches (POST /v1/fetch) by outcome", ["outcome"],
                               registry=self.registry)
        self.fetch_bytes = Counter("parkrl_gateway_fetch_bytes", "Body bytes returned by egress fetches",
                                   registry=self.registry)
        self._window = window
        self._recent: dict[str, deque[float]] = {}
        self._sessions = sessions
        self._servers_up = servers_up
        self.registry.register(_LiveCollector(self))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Records one answered request."""
        self.requests.labels(route, method, str(status)).inc()
        self.latency.labels(route).observe(seconds)
        recent = self._recent.get(route)
        if recent is None:
            recent = self._recent[route] = deque(maxlen=self._window)
        recent.append(seconds)

    def reject(self, reason: str) -> None:
        self.rejections.labels(reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LiveCollector:
    """Values computed at scrape time: latency quantiles, sessions, server health."""

    def __init__(self, m: GatewayMetrics) -> None:
        self.m = m

    def describe(self) -> list:
        return []

    def collect(self):
        q = Metric("parkrl_gateway_request_latency_quantiles_seconds",
                   f"Request latency quantiles over the last {self.m._window} requests per route", "summary")
        for route, recent in sorted(self.m._recent.items()):
            values = sorted(recent)
            for p in QUANTILES:
                q.add_sample(q.name, {"route": route, "quantile": str(p)}, quantile(values, p))
            q.add_sample(q.name + "_count", {"route": route}, float(len(values)))
            q.add_sample(q.name + "_sum", {"route": route}, float(sum(values)))
        yield q
        total, by_server, by_run = self.m._sessions()
        yield GaugeMetricFamily("parkrl_gateway_active_sessions", "Live sandbox sessions (and creations in flight)",
                                value=total)
        g = GaugeMetricFamily("parkrl_gateway_active_sessions_by_server", "Live sandbox sessions per server",
                              labels=["server"])
        for url, n in sorted(by_server.items()):
            g.add_metric([url], n)
        yield g
        g = GaugeMetricFamily("parkrl_gateway_active_sessions_by_run", "Live sandbox sessions per run",
                              labels=["run"])
        for run, n in sorted(by_run.items()):
            g.add_metric([run], n)
        yield g
        g = GaugeMetricFamily("parkrl_gateway_server_up", "1 when the sandbox server passes its health checks",
                              labels=["server"])
        for url, up in self.m._servers_up():
            g.add_metric([url], 1.0 if up else 0.0)
        yield g
