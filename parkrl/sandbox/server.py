"""`python -m parkrl.sandbox.server`: run a sandbox server.

Secure by default: it refuses to start without a token (PARKRL_SANDBOX_TOKEN or --token-file)
unless --insecure-no-auth, and without working isolation (bubblewrap with user namespaces, checked
by actually starting a sandbox) unless --insecure-no-isolation. It logs the address it listens on
(useful with --port 0) as: "parkrl sandbox server listening on http://HOST:PORT".
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import sys

from .config import DEFAULT_UID_BASE, SandboxLimits, ServerConfig, default_python
from .isolation import Isolation, IsolationUnavailable, make_isolation
from .session import Session, SessionError

log = logging.getLogger("parkrl.sandbox")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    d, lim = ServerConfig(), SandboxLimits()
    p = argparse.ArgumentParser(prog="python -m parkrl.sandbox.server", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port (0: pick a free one; default 8080)")
    p.add_argument("--token-file", help="file holding the bearer token (else env PARKRL_SANDBOX_TOKEN)")
    p.add_argument("--insecure-no-auth", action="store_true", help="serve without a token (trusted networks only)")
    p.add_argument("--insecure-no-isolation", action="store_true",
                   help="run commands as plain subprocesses of the server: NO isolation (trusted code only)")
    p.add_argument("--max-sessions", type=int, default=d.max_sessions,
                   help="sandboxes at once, sessions and /run_code calls together")
    p.add_argument("--idle-timeout-s", type=float, default=d.idle_timeout_s, help="close sessions idle this long")
    p.add_argument("--max-idle-timeout-s", type=float, default=d.max_idle_timeout_s,
                   help="cap on the idle timeout a client may ask for")
    p.add_argument("--default-timeout-s", type=float, default=d.default_timeout_s, help="command timeout if not given")
    p.add_argument("--max-timeout-s", type=float, default=d.max_timeout_s, help="cap on any command's timeout")
    p.add_argument("--run-code-wait-s", type=float, default=d.run_code_wait_s,
                   help="how long /run_code waits for a free sandbox before answering 429")
    p.add_argument("--workspace-mb", type=int, default=lim.workspace_mb, help="size of each /workspace tmpfs")
    p.add_argument("--tmp-mb", type=int, default=lim.tmp_mb, help="size of each /tmp and /dev/shm tmpfs")
    p.add_argument("--memory-mb", type=int, default=lim.memory_mb, help="address-space limit per process")
    p.add_argument("--max-processes", type=int, default=lim.max_processes, help="processes per sandbox")
    p.add_argument("--cpu-s", type=int, default=None, help="CPU seconds per process (default: --max-timeout-s)")
    p.add_argument("--file-mb", type=int, default=lim.file_mb, help="largest file a command may write")
    p.add_argument("--max-open-files", type=int, default=lim.max_open_files, help="open files per process")
    p.add_argument("--output-cap-bytes", type=int, default=lim.output_cap_bytes,
                   help="stdout and stderr kept per command, each")
    p.add_argument("--max-file-mb", type=float, default=lim.max_file_bytes / (1 << 20),
                   help="largest file moved through the files API")
    p.add_argument("--nice", type=int, default=lim.nice, help="niceness of sandboxed processes (server stays ahead)")
    p.add_argument("--bwrap", default=None, help="path of the bwrap binary (default: bwrap on PATH)")
    p.add_argument("--python", default=None, help=f"Python inside sandboxes (default {default_python()})")
    p.add_argument("--ro-bind", action="append", default=[], metavar="SRC[:DEST]",
                   help="extra read-only directory in every sandbox (e.g. a venv with numpy); repeatable")
    p.add_argument("--uid-base", type=int, default=DEFAULT_UID_BASE,
                   help="host uid of sandbox slot 0 when running as root (slot i: base+i); give each server "
                        "on a machine its own range")
    p.add_argument("--log-level", default="info")
    return p.parse_args(argv)


def read_token(args: argparse.Namespace) -> str | None:
    """The bearer token from --token-file, else PARKRL_SANDBOX_TOKEN; None if neither is set."""
    if args.token_file:
        with open(args.token_file) as f:
            token = f.read().strip()
        if not token:
            raise SystemExit(f"error: token file {args.token_file} is empty")
        return token
    return os.environ.get("PARKRL_SANDBOX_TOKEN", "").strip() or None


def build_config(args: argparse.Namespace, token: str | None) -> ServerConfig:
    limits = SandboxLimits(
        memory_mb=args.memory_mb, max_processes=args.max_processes,
        cpu_s=args.cpu_s if args.cpu_s is not None else int(args.max_timeout_s) + 5,
        file_mb=args.file_mb, max_open_files=args.max_open_files, workspace_mb=args.workspace_mb, tmp_mb=args.tmp_mb,
        output_cap_bytes=args.output_cap_bytes, max_file_bytes=int(args.max_file_mb * (1 << 20)), nice=args.nice)
    binds = []
    for spec in args.ro_bind:
        src, _, dest = spec.partition(":")
        binds.append((os.path.realpath(src), dest or os.path.realpath(src)))
    config = ServerConfig(
        token=token, max_sessions=args.max_sessions, idle_timeout_s=args.idle_timeout_s,
        max_idle_timeout_s=max(args.max_idle_timeout_s, args.idle_timeout_s), default_timeout_s=args.default_timeout_s,
        max_timeout_s=args.max_timeout_s, run_code_wait_s=args.run_code_wait_s, limits=limits,
        isolation="none" if args.insecure_no_isolation else "bwrap", bwrap=args.bwrap, ro_binds=binds,
        uid_base=args.uid_base, reap_interval_s=min(1.0, max(0.1, args.idle_timeout_s / 4)))
    if args.python:
        config.python = args.python
    return config


async def probe(isolation: Isolation, config: ServerConfig) -> None:
    """Start one real sandbox (on a spare slot), run a command in it, close it; raise
    IsolationUnavailable with the cause if that does not work."""
    try:
        session = await Session.start("startup-probe", config.max_sessions, isolation, config.limits, 0)
    except SessionError as e:
        raise IsolationUnavailable(str(e).replace("sandbox session 'startup-probe' did not start: ", "")) from None
    try:
        r = await session.exec("echo parkrl-probe", 30)
        if r.exit_code != 0 or r.stdout.strip() != "parkrl-probe":
            raise IsolationUnavailable(f"a probe command in a fresh sandbox failed: exit {r.exit_code}, "
                                       f"stderr {r.stderr.strip()!r}")
    finally:
        await session.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    token = read_token(args)
    if token is None and not args.insecure_no_auth:
        print("error: no token: set PARKRL_SANDBOX_TOKEN or pass --token-file FILE (clients send "
              "'Authorization: Bearer <token>'); --insecure-no-auth serves without one (trusted networks only)",
              file=sys.stderr)
        return 2
    config = build_config(args, token)
    if not 0 < config.uid_base or config.uid_base + config.max_sessions + 1 >= 2 ** 31:
        print("error: --uid-base + --max-sessions must stay within 1..2**31-1 (bwrap takes uids as signed ints)",
              file=sys.stderr)
        return 2
    if token is None:
        log.warning("INSECURE: --insecure-no-auth: anyone who reaches %s:%s can run commands", args.host, args.port)
    isolation = make_isolation(config)
    try:
        isolation.check()
        asyncio.run(probe(isolation, config))
    except IsolationUnavailable as e:
        print(f"error: sandbox isolation is unavailable, refusing to start: {e}", file=sys.stderr)
        return 3
    if config.isolation == "none":
        log.warning("INSECURE: --insecure-no-isolation: commands run as plain subprocesses of this server with its "
                    "uid, files, network and processes in reach; only rlimits and deadlines apply. Never expose "
                    "this to untrusted code.")
    elif os.geteuid() != 0:
        log.warning("not running as root: every sandbox runs as this server's uid %d, so RLIMIT_NPROC is shared "
                    "between sandboxes and the server (a fork bomb can starve the others)", os.geteuid())
    log.info("isolation %s ok (python %s); limits %s; max %d sessions", isolation.name, config.python,
             config.limits, config.max_sessions)

    import uvicorn

    from .app import create_app

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(1024)
    sock.set_inheritable(True)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log.info("parkrl sandbox server listening on http://%s:%d", shown, port)
    server = uvicorn.Server(uvicorn.Config(create_app(config, isolation), log_config=None, access_log=False,
                                           log_level=args.log_level.lower(), timeout_graceful_shutdown=10))
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
