"""`python -m parkrl.sites.wiki --port 8090 [--host 127.0.0.1] [--seed 0] [--entities 300]`: serve the wiki.

Prints `parkrl wiki listening on http://HOST:PORT` to stderr once it serves (with --port 0, the port
it got). The site is generated from --seed and --entities; questions about it
(`parkrl.sites.wiki.questions(..., world_seed=SEED, entities=N)`) must use the same two values.
"""
from __future__ import annotations

import argparse
import socket
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m parkrl.sites.wiki", description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8090, help="port to listen on (0: any free port)")
    p.add_argument("--seed", type=int, default=0, help="seed of the generated world")
    p.add_argument("--entities", type=int, default=300, help="towns, companies and people in all")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning", "error"])
    args = p.parse_args(argv)
    import uvicorn

    from parkrl.sites.wiki.app import create_app

    try:
        app = create_app(seed=args.seed, entities=args.entities)
        sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.host, args.port))
    except (ValueError, OSError) as e:
        print(f"parkrl wiki: refusing to start: {e}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level, access_log=False))
    app.router.on_startup.append(lambda: print(f"parkrl wiki listening on http://{shown}:{port} "
                                               f"({len(app.state.world.entities)} articles)", file=sys.stderr,
                                               flush=True))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
