"""parkrl's sandbox service: isolated sessions (terminal/python tool calls) behind an HTTP API.

Modules, one job each:
- config.py     limits and server settings
- runner.py     the in-sandbox init (stdlib only): persistent shell, deadlines, files
- isolation.py  how a sandbox is launched/killed (bubblewrap; an insecure plain-subprocess mode)
- session.py    one session: framed protocol to its runner, exec/files/close
- manager.py    all sessions: cap, slots (host uids), idle reaper
- run_code.py   SandboxFusion-compatible stateless POST /run_code
- protocol.py   the API's request/response models (shared with client and gateway)
- metrics.py    Prometheus metrics
- app.py        the FastAPI app: routes, auth, errors
- server.py     `python -m parkrl.sandbox.server`
- client.py     SandboxClient / AsyncSandboxClient (httpx)
- http11.py     a lean keep-alive HTTP/1.1 client (AsyncSandboxClient's and the gateway's hot path)

The client is importable without the server's dependencies beyond httpx and pydantic:
`from parkrl.sandbox.client import SandboxClient`.
"""

__all__ = ["AsyncSandboxClient", "SandboxBusy", "SandboxClient", "SandboxError", "SandboxNotFound"]


def __getattr__(name: str):
    if name in __all__:
        from . import client

        return getattr(client, name)
    raise AttributeError(name)
