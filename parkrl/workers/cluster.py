"""Joining or starting the Ray cluster (nothing at all for `trainer.runtime=local`)."""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Iterator

from parkrl.config import Config


def worker_env() -> dict[str, str]:
    """Environment every worker process gets; the driver's working directory is on the workers'
    PYTHONPATH, so modules named in `trainer.imports` or `reward.cls` import there as here."""
    path = os.pathsep.join(p for p in (os.getcwd(), os.environ.get("PYTHONPATH", "")) if p)
    return {"TOKENIZERS_PARALLELISM": "false", "VLLM_NO_USAGE_STATS": "1", "VLLM_CONFIGURE_LOGGING": "0",
            "PYTHONPATH": path}


@contextmanager
def ray_cluster(cfg: Config) -> Iterator[None]:
    """Join `trainer.ray_address` if given, else start a private local cluster; shut down after.

    A local cluster gets its own temp dir and is stopped by `ray.shutdown()`, never by
    `ray stop` (which would kill every Ray process of the user on the machine).
    """
    if cfg.trainer.runtime != "ray":
        yield
        return
    import ray

    if ray.is_initialized():  # the caller manages the cluster (tests, notebooks)
        yield
        return
    runtime_env = {"env_vars": worker_env()}
    temp_dir = None
    if cfg.trainer.ray_address:
        ray.init(address=cfg.trainer.ray_address, runtime_env=runtime_env, log_to_driver=True)
    else:
        res = cfg.resources
        needed = sum(r.num_workers * r.cpus_per_worker for r in (res.learner, res.rollout))
        temp_dir = tempfile.mkdtemp(prefix="parkrl-ray-")
        ray.init(
            num_cpus=max(int(needed + 0.999), os.cpu_count() or 1),
            include_dashboard=False,
            _temp_dir=temp_dir,
            runtime_env=runtime_env,
            log_to_driver=True,
        )
    try:
        yield
    finally:
        ray.shutdown()
        if temp_dir:
            shutil.rmtree(temp_dir, ignore_errors=True)
