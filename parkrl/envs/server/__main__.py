"""`python -m parkrl.envs.server`: run an environment server (parkrl.envs.server.app).

Secure by default: it refuses to start without a token (PARKRL_ENV_TOKEN or --token-file) unless
--insecure-no-auth. Environment code runs in the server's own process, so run it on nodes meant
for it (CPU nodes) and limit what it may import with --allow. Tools that need the sandbox service
(terminal) reach it through --sandbox-url and --sandbox-token-file. It logs the address it listens
on (useful with --port 0) as: "parkrl env server listening on http://HOST:PORT".
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys

from parkrl.envs.server.app import ServerOptions, create_app

log = logging.getLogger("parkrl.envs.server")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d = ServerOptions(token=None)
    p = argparse.ArgumentParser(prog="python -m parkrl.envs.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8090, help="port (0: pick a free one; default 8090)")
    p.add_argument("--token-file", help="file holding the bearer token (else env PARKRL_ENV_TOKEN)")
    p.add_argument("--insecure-no-auth", action="store_true", help="serve without a token (trusted networks only)")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions, help="episodes open at once")
    p.add_argument("--idle-timeout-s", type=float, default=d.idle_timeout_s, help="close sessions idle this long")
    p.add_argument("--allow", default="", help="comma-separated import-path prefixes of the environment classes "
                                                "it may run (default: any parkrl.Environment subclass)")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import this module at start (where your environments register); repeatable")
    p.add_argument("--sandbox-url", default="", help="the sandbox service the environments' tools use")
    p.add_argument("--sandbox-token-file", default="", help="the run's token for --sandbox-url")
    return p.parse_args(argv)


def _token(args: argparse.Namespace) -> str | None:
    if args.insecure_no_auth:
        log.warning("INSECURE: --insecure-no-auth: anyone who reaches %s:%s can run environments here",
                    args.host, args.port)
        return None
    if args.token_file:
        try:
            token = open(args.token_file).read().strip()
        except OSError as e:
            sys.exit(f"parkrl env server: --token-file {args.token_file!r}: cannot read it ({e.strerror})")
    else:
        token = os.environ.get("PARKRL_ENV_TOKEN", "").strip()
    if not token:
        sys.exit("parkrl env server: no token: give --token-file or PARKRL_ENV_TOKEN (or --insecure-no-auth on a "
                 "trusted network)")
    return token


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    options = ServerOptions(_token(args), args.max_sessions, args.idle_timeout_s,
                            tuple(a.strip() for a in args.allow.split(",") if a.strip()))
    from parkrl.plugins import import_plugins

    import_plugins(args.imports)
    if args.sandbox_url:
        from parkrl.tools.sandboxed import connect, endpoint_for

        connect(endpoint_for(args.sandbox_url, args.sandbox_token_file))
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"parkrl env server listening on http://{shown}:{port}", flush=True)
    config = uvicorn.Config(create_app(options), log_level="warning", access_log=False, timeout_keep_alive=75)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
