"""`python -m parkrl.gateway`: start the API gateway in front of sandbox servers.

    python -m parkrl.gateway --host 0.0.0.0 --port 8080 \\
        --servers http://sbx-0:8000,http://sbx-1:8000 \\
        --tokens-file /etc/parkrl/run-tokens.json --server-token-file /etc/parkrl/sandbox-token \\
        --secret-file /etc/parkrl/gateway-secret

Prints `parkrl gateway listening on http://HOST:PORT` to stderr once it serves (with --port 0, the
port it got), at any --log-level. To run it inside a Ray actor, call `main([...same flags...])` in
the actor (a thread of its own), or serve `parkrl.gateway.create_app(config)` with uvicorn.
"""
from __future__ import annotations

import argparse
import logging
import socket
import sys

from parkrl.gateway.auth import AuthConfigError, RunTokens, gateway_secret, server_token
from parkrl.gateway.config import GatewayConfig

log = logging.getLogger("parkrl.gateway")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m parkrl.gateway", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (0: any free port)")
    p.add_argument("--servers", required=True, help="sandbox server base URLs, comma-separated")
    p.add_argument("--tokens-file", help='JSON {"<run_id>": "<token>", ...}: the runs allowed in (re-read on change)')
    p.add_argument("--insecure-no-auth", action="store_true",
                   help="accept every request without a token (all as run 'anonymous'); for local experiments only")
    p.add_argument("--server-token-file", help="token the gateway presents to the sandbox servers "
                                                "(default: $PARKRL_SANDBOX_TOKEN; none: no Authorization header)")
    p.add_argument("--secret-file", help="HMAC key of session ids (default: $PARKRL_GATEWAY_SECRET; none: a random "
                                          "key, so sessions do not survive a gateway restart)")
    p.add_argument("--max-sessions-per-run", type=int, default=64, help="open sessions a run may hold")
    p.add_argument("--max-sessions", type=int, default=1024, help="open sessions in total")
    p.add_argument("--retry-after-s", type=int, default=2, help="Retry-After of the gateway's own 429s")
    p.add_argument("--health-interval-s", type=float, default=2.0, help="seconds between health checks")
    p.add_argument("--health-timeout-s", type=float, default=2.0, help="deadline of one health check")
    p.add_argument("--down-after", type=int, default=2,
                   help="failed checks in a row that mark a server down (connection refused: at once)")
    p.add_argument("--call-timeout-s", type=float, default=25.0, help="deadline of a non-exec call to a server")
    p.add_argument("--exec-margin-s", type=float, default=12.0,
                   help="exec deadline = its timeout_s + this (the server may take 10 s to kill a timed-out command)")
    p.add_argument("--default-exec-timeout-s", type=float, default=10.0, help="timeout_s of an exec that has none")
    p.add_argument("--max-exec-timeout-s", type=float, default=300.0,
                   help="cap on the exec timeout_s waited for (set it to the servers' --max-timeout-s)")
    p.add_argument("--idle-timeout-s", type=float, default=900.0,
                   help="the servers' idle reaping of sessions (the gateway forgets idle sessions after it too)")
    p.add_argument("--max-body-mb", type=float, default=64.0, help="largest request body accepted")
    p.add_argument("--egress-hosts", default="",
                   help="host:port pairs that runs may fetch through POST /v1/fetch (the browser tool), "
                        "comma-separated; none: no egress at all")
    p.add_argument("--fetch-max-kb", type=float, default=2048.0, help="cap on the body a fetch returns")
    p.add_argument("--fetch-timeout-s", type=float, default=10.0, help="cap on the deadline of one fetch")
    p.add_argument("--access-log", action="store_true", help="log every request (method, path, status)")
    p.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    return p


def config_from_args(args: argparse.Namespace) -> GatewayConfig:
    """Validated settings; raises AuthConfigError/ValueError with a message for the operator."""
    if args.insecure_no_auth and args.tokens_file:
        raise AuthConfigError("--insecure-no-auth and --tokens-file exclude each other")
    if args.insecure_no_auth:
        tokens = None
    elif not args.tokens_file:
        raise AuthConfigError("no run tokens: pass --tokens-file FILE (JSON {\"<run_id>\": \"<token>\"}), or "
                              "--insecure-no-auth to let anyone in")
    else:
        tokens = RunTokens.from_file(args.tokens_file)
        if not len(tokens):
            raise AuthConfigError(f"tokens file {args.tokens_file} has no runs")
    secret, persistent = gateway_secret(args.secret_file)
    return GatewayConfig(
        servers=[u for u in args.servers.split(",") if u.strip()], run_tokens=tokens, secret=secret,
        secret_persistent=persistent, server_token=server_token(args.server_token_file),
        tokens_file=args.tokens_file, max_sessions_per_run=args.max_sessions_per_run,
        max_sessions=args.max_sessions, retry_after_s=args.retry_after_s,
        health_interval_s=args.health_interval_s, health_timeout_s=args.health_timeout_s,
        down_after=args.down_after, call_timeout_s=args.call_timeout_s, exec_margin_s=args.exec_margin_s,
        default_exec_timeout_s=args.default_exec_timeout_s, max_exec_timeout_s=args.max_exec_timeout_s,
        default_idle_timeout_s=args.idle_timeout_s, max_body_bytes=int(args.max_body_mb * (1 << 20)),
        egress_hosts=[h.strip() for h in args.egress_hosts.split(",") if h.strip()],
        fetch_max_bytes=int(args.fetch_max_kb * 1024), fetch_timeout_s=args.fetch_timeout_s)


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart may take the same port at once
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per forwarded call otherwise
    try:
        config = config_from_args(args)
    except (AuthConfigError, ValueError) as e:
        print(f"parkrl gateway: refusing to start: {e}", file=sys.stderr)
        return 2
    import prometheus_client
    import uvicorn

    from parkrl.gateway.app import create_app

    prometheus_client.disable_created_metrics()
    try:
        app = create_app(config)
        sock = _listen(args.host, args.port)
    except (ValueError, OSError) as e:
        print(f"parkrl gateway: refusing to start: {e}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    if config.run_tokens is None:
        log.warning("!" * 78)
        log.warning("AUTHENTICATION IS DISABLED (--insecure-no-auth): anyone who reaches %s:%s can run code "
                    "in the sandboxes", host, port)
        log.warning("!" * 78)
    else:
        log.info("%d runs may connect: %s", len(config.run_tokens), ", ".join(config.run_tokens.run_ids))
    log.info("egress (POST /v1/fetch): %s", ", ".join(config.egress_hosts) or "none")
    if not config.secret_persistent:
        log.warning("no --secret-file / $PARKRL_GATEWAY_SECRET: session ids are signed with a random key, so "
                    "open sessions are unusable after a gateway restart")
    # SIGTERM: stop accepting, give calls in flight up to 20 s, then close (clients see a broken call)
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=args.access_log,
                                           timeout_keep_alive=30, timeout_graceful_shutdown=20, lifespan="on"))
    shown = f"[{host}]" if ":" in host else host
    app.state.on_started = lambda: print(f"parkrl gateway listening on http://{shown}:{port}", file=sys.stderr,
                                         flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
