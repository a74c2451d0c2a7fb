"""Per-process settings and readings of a worker: threads, cores, device, peak memory."""
from __future__ import annotations

import os
import resource

import torch


def set_torch_threads(cpus: float) -> int:
    """Give this process's torch as many threads as the worker's CPU share (at least 1).

    Several busy processes on 2 cores, each with more threads than its share, ran 5-10x
    slower than with one thread each. Returns the thread count.
    """
    n = max(1, int(cpus))
    os.environ["OMP_NUM_THREADS"] = str(n)
    torch.set_num_threads(n)
    return n


def cpu_slot(rank: int, cpus: float) -> list[int]:
    """The cores worker `rank` of a role binds to: `cpus` consecutive cores of this process's
    affinity, starting at rank * cpus (wrapping around when the role asks for more cores than
    the host has)."""
    cores = sorted(os.sched_getaffinity(0))
    n = min(max(1, int(cpus)), len(cores))
    start = (rank * n) % len(cores)
    return [cores[(start + k) % len(cores)] for k in range(n)]


def role_device(gpus_per_worker: float, key: str) -> torch.device:
    """The device of a worker whose role was given `gpus_per_worker` GPUs (`key` names that
    setting, e.g. "resources.learner.gpus_per_worker", for the error).

    The CPU when the role has no GPU, even where CUDA is visible: Ray 2.60 no longer hides the
    node's GPUs from actors that asked for none, so checking `torch.cuda.is_available()` alone
    put them on cuda:0. With GPUs, the current CUDA device (Ray's CUDA_VISIBLE_DEVICES makes it
    the one assigned to this worker).
    """
    if gpus_per_worker <= 0:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(f"{key}={gpus_per_worker}, but CUDA is not available in this worker's process "
                           f"(torch {torch.__version__}, CUDA build {torch.version.cuda}); set {key}=0 to run it "
                           f"on CPU, or install a CUDA torch (bash scripts/setup.sh on the GPU machine)")
    return torch.device("cuda", torch.cuda.current_device())


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)

