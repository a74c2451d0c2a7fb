"""The API gateway: the single entry point in front of N sandbox servers.

The trainer (its tools, through `parkrl.sandbox.client.SandboxClient`) talks only to the
gateway, which exposes the sandbox server's session API unchanged (POST /v1/sessions, /exec,
PUT/GET /files, DELETE, POST /run_code) plus GET /healthz and GET /metrics, and adds:

- auth: a bearer token per run (`auth.py`; JSON tokens file, constant-time check, never logged);
  a missing or wrong token is 401, another run's session is 404, exactly like a session that
  does not exist. The gateway presents its own server token to the servers.
- admission (`admission.py`): caps on open sessions per run and in total; a server's own 429
  moves the request on to the next server; a full fleet answers 429 with Retry-After at once,
  it never queues.
- routing (`registry.py`): a new session goes to the healthy server with the fewest sessions;
  every later call of that session goes to the same server (affinity by the session id itself).
- deadlines and failover: each forwarded call has a deadline (exec: its timeout_s + a margin;
  others: a fixed one); a timeout is 504 naming the session and the server URL. Health checks
  mark dead servers down; their sessions fail fast with 502/503 naming the session and that its
  server at URL is gone; new sessions go to the healthy servers, and to a server again once it
  is back (its old sessions are gone: it restarted).
- metrics (`metrics.py`): requests, latency histogram and p50/p99, active sessions, rejections.

Why FastAPI + httpx and not Ray Serve: the gateway is a small I/O-bound proxy whose hot path is
"check a token, verify an HMAC, forward bytes". One uvicorn process with one shared
`httpx.AsyncClient` connection pool (keep-alive to every server) does that in about a
millisecond and needs nothing else, so it starts identically standalone (`python -m
parkrl.gateway`), inside a Ray actor (call `create_app` and serve it with uvicorn), or as a
Kubernetes Deployment behind a Service. Ray Serve would give replicas and ingress, but it ties the
gateway to a running Ray cluster (and its dashboard/proxy actors), adds its own proxy hop and
request router in front of ours, and its replica autoscaling is not what a gateway needs:
routing state here is per session, and Serve's routing is per request. If one gateway process is
ever not enough, run several with the same secret behind any L4 load balancer - the session ids
make each of them able to route every session (see below); only the caps become per replica.

Session ids and restarts (`session_ids.py`): the id the run sees is
`gs1.<base64url(server URL + server session id)>.<HMAC(secret, run id + payload)>`. Routing reads
the server out of the id, so the gateway needs no session table to route: a gateway restarted
with the same secret (--secret-file / $PARKRL_GATEWAY_SECRET) keeps routing open sessions, and a
run cannot forge or probe another run's session (the MAC binds the run id; a mismatch is the same
404 as an unknown id). The table the gateway keeps (for caps, placement and metrics) is a cache
that a restarted gateway rebuilds as sessions are used again; until then the caps can be exceeded
by sessions opened before the restart. Without a persistent secret, a restart makes old session
ids unknown (404) and the trainer opens new sessions. During the restart itself, calls fail with a
connection error: clients retry with backoff, and the gateway binds its port with SO_REUSEADDR so a
restart at the same port works at once.

Modules: auth.py (tokens, secrets), session_ids.py (signed ids), admission.py (caps, session table),
registry.py (servers, health checks, least-loaded choice), metrics.py (Prometheus text),
app.py (routes and forwarding), config.py (settings), __main__.py (CLI).
"""
from parkrl.gateway.config import GatewayConfig

__all__ = ["GatewayConfig", "create_app"]


def create_app(config: GatewayConfig):
    """The gateway's ASGI app (FastAPI); imported lazily so `parkrl.gateway` imports stay light."""
    from parkrl.gateway.app import create_app as _create_app

    return _create_app(config)
