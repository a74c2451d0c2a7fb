"""The environment server: `Environment` episodes over HTTP (`env.remote=true`; docs/extending.md).

`python -m parkrl.envs.server` serves one environment instance per session; the trainer starts N
of them behind a gateway (`env.servers=N`), or uses a running one (`env.url`). The same user
subclass runs in-process and here unchanged; `parkrl.envs.remote.RemoteEnvironment` is the
trainer's side.
"""
from parkrl.envs.server.app import ServerOptions, create_app

__all__ = ["ServerOptions", "create_app"]
