"""Joining or starting the Ray cluster (nothing at all for `trainer.runtime=local`).

A local cluster lives in its own temp dir, `<tmp>/parkrl-ray-*`, removed at shutdown. A run
that was SIGKILLed cannot remove it; the next run removes such dirs once every process of the
dead run is gone (`clean_stale_temp_dirs`).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

from parkrl.config import Config

TEMP_PREFIX = "parkrl-ray-"
OWNER_FILE = "parkrl-owner.json"  # {"pid", "start"}: the driver that made the dir (marks it as ours)


FORWARDED_PREFIXES = ("NCCL_", "TORCH_NCCL_", "CUDA_")
# Set per worker (Ray: the worker's assigned GPUs) or naming the driver's own paths.
NOT_FORWARDED = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_HOME", "CUDA_PATH"})


def forwarded_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The driver's NCCL_*, TORCH_NCCL_* and CUDA_* settings (NCCL_SOCKET_IFNAME, NCCL_DEBUG,
    TORCH_NCCL_BLOCKING_WAIT, CUDA_LAUNCH_BLOCKING, ...) that workers get too: Ray starts workers
    on other nodes (and in a joined cluster, on this one) without the driver's environment.
    Not CUDA_VISIBLE_DEVICES, which Ray sets per worker, nor the driver's CUDA_HOME/CUDA_PATH."""
    return {k: v for k, v in environ.items() if k.startswith(FORWARDED_PREFIXES) and k not in NOT_FORWARDED}


def worker_env(verbose: bool = False) -> dict[str, str]:
    """Environment every worker process gets; the driver's working directory is on the workers'
    PYTHONPATH, so modules named in `trainer.imports` or `reward.cls` import there as here.
    vLLM prints its INFO lines only with `trainer.verbose`. The driver's NCCL/CUDA settings
    are forwarded (`forwarded_env`)."""
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    return {**forwarded_env(os.environ), "TOKENIZERS_PARALLELISM": "false", "VLLM_NO_USAGE_STATS": "1",
            "VLLM_CONFIGURE_LOGGING": "1" if verbose else "0", "PYTHONPATH": path}


@contextmanager
def ray_cluster(cfg: Config) -> Iterator[None]:
    """Join `trainer.ray_address` if given, else start a private local cluster; shut down after.

    A local cluster gets its own temp dir and is stopped by `ray.shutdown()`, never by
    `ray stop` (which would kill every Ray process of the user on the machine). It starts no
    dashboard (`include_dashboard=False`: Ray then runs only its minimal API-server process).
    Ray 2.60's raylet still starts its dashboard agent and runtime-env agent: it has no option
    to leave them out (it refuses an empty agent command). After a SIGKILL those two outlive
    the run for about a minute (each waits 60 s to report the raylet's death to the dead GCS);
    the next run removes the dead run's temp dir once they are gone.
    """
    if cfg.trainer.runtime != "ray":
        yield
        return
    import ray

    if ray.is_initialized():  # the caller manages the cluster (tests, notebooks)
        yield
        return
    runtime_env = {"env_vars": worker_env(cfg.trainer.verbose)}
    temp_dir = None
    main_thread = threading.current_thread() is threading.main_thread()
    sigterm = signal.getsignal(signal.SIGTERM) if main_thread else None
    # ray.init installs a SIGTERM handler that calls sys.exit() wherever the signal lands (in a
    # logging lock's release it was swallowed: the run went on). Keep the caller's handling.
    ray_utils = sys.modules.get("ray._private.utils")
    set_sigterm_handler = getattr(ray_utils, "set_sigterm_handler", None)
    if set_sigterm_handler is not None and sigterm is not None:
        ray_utils.set_sigterm_handler = lambda handler: None
    try:
        try:
            if cfg.trainer.ray_address:
                ray.init(address=cfg.trainer.ray_address, runtime_env=runtime_env, log_to_driver=True)
            else:
                removed = clean_stale_temp_dirs()
                if removed:
                    print(f"[parkrl] removed {len(removed)} Ray temp dir(s) of earlier runs that were killed: "
                          f"{', '.join(removed)}", flush=True)
                res = cfg.resources
                needed = (sum(r.num_workers * r.cpus_per_worker for r in (res.learner, res.rollout))
                          + sum(m.resources.num_workers * m.resources.cpus_per_worker for m in cfg.reward.models)
                          + (cfg.sandbox.servers + 1) * res.sandbox.cpus_per_worker * bool(cfg.sandbox.servers)
                          + (cfg.env.servers + 1) * res.env.cpus_per_worker * bool(cfg.env.remote and cfg.env.servers))
                temp_dir = tempfile.mkdtemp(prefix=TEMP_PREFIX)
                _mark_ours(temp_dir)
                ray.init(
                    num_cpus=max(int(needed + 0.999), os.cpu_count() or 1),
                    include_dashboard=False,
                    _temp_dir=temp_dir,
                    runtime_env=runtime_env,
                    log_to_driver=True,
                )
        except SystemExit as e:  # ray.init's own SIGTERM handler exits with the signal's number
            if e.code == signal.SIGTERM:
                raise KeyboardInterrupt("SIGTERM") from None
            raise
        finally:
            if set_sigterm_handler is not None:
                ray_utils.set_sigterm_handler = set_sigterm_handler
            if sigterm is not None:  # keep the caller's SIGTERM handling
                signal.signal(signal.SIGTERM, sigterm)
        yield
    finally:
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _start_time(pid: int) -> str | None:
    """The start time of process `pid` (from /proc, so a reused pid is told apart), or None if
    there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name


def _mark_ours(temp_dir: str) -> None:
    Path(temp_dir, OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "start": _start_time(os.getpid())}))


def _paths_in_use(pids: list[int]) -> set[str]:
    """Paths that processes hold: their working directories, open files and command lines."""
    used: set[str] = set()
    for pid in pids:
        base = f"/proc/{pid}"
        try:
            used.add(os.readlink(f"{base}/cwd"))
            used.update(Path(f"{base}/cmdline").read_bytes().decode(errors="replace").split("\0"))
            for fd in os.scandir(f"{base}/fd"):
                try:
                    used.add(os.readlink(fd.path))
                except OSError:
                    pass
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return used


def clean_stale_temp_dirs(parent: str | None = None) -> list[str]:
    """Remove the Ray temp dirs that earlier parkrl runs left under `parent` (default: the
    system temp dir) when they were killed. Only ours: named parkrl-ray-*, owned by this user,
    holding the owner file a run writes; and only when their processes are gone: the run's
    driver is dead and no process holds a file, working directory or argument inside the dir.
    Linux only (elsewhere nothing is removed). Returns the removed dirs."""
    if not sys.platform.startswith("linux") or not os.path.isdir("/proc"):
        return []
    candidates = []
    for d in sorted(Path(parent or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*")):
        try:
            if d.is_symlink() or not d.is_dir() or d.stat().st_uid != os.getuid():
                continue
            owner = json.loads((d / OWNER_FILE).read_text())
            pid, start = int(owner["pid"]), owner.get("start")
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours, or a run writing its owner file right now
        now = _start_time(pid)
        if now is not None and (start is None or now == start):
            continue  # its driver still runs
        candidates.append(d)
    if not candidates:
        return []
    pids = [int(e.name) for e in os.scandir("/proc") if e.name.isdigit()]
    used = _paths_in_use(pids)
    removed = []
    for d in candidates:
        inside = re.compile(re.escape(str(d.resolve())) + r"(?![\w.-])")  # the dir or a path in it
        if any(inside.search(u) for u in used):
            continue  # a process of the dead run is still there (Ray's agents linger about a minute)
        shutil.rmtree(d, ignore_errors=True)
        if not d.exists():
            removed.append(str(d))
    return removed
