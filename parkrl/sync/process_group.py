"""The weight-sync process group: learner rank 0 plus one rank per rollout engine.

It is a standalone group (its own TCPStore and ProcessGroup), separate from the learner's FSDP
group and from whatever vLLM sets up inside its workers, so neither side's default group is
touched. gloo on CPU, NCCL on GPU; same code path otherwise. Every collective has a timeout.
"""
from __future__ import annotations

import socket
from datetime import timedelta

import torch
import torch.distributed as dist


def free_port() -> int:
    """A TCP port that was free a moment ago on this host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def node_ip() -> str:
    """This host's address as other nodes of the cluster see it."""
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except ImportError:
        pass
    return "127.0.0.1"


def init_sync_group(host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> dist.ProcessGroup:
    """Join (rank 0: host) the sync group; blocks until all `world_size` ranks have joined."""
    timeout = timedelta(seconds=timeout_s)
    store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=timeout)
    store = dist.PrefixStore("parkrl-weight-sync", store)
    if backend == "gloo":
        group = dist.ProcessGroupGloo(store, rank, world_size, timeout)
    elif backend == "nccl":
        opts = dist.ProcessGroupNCCL.Options()
        opts._timeout = timeout
        group = dist.ProcessGroupNCCL(store, rank, world_size, opts)
    else:
        raise ValueError(f"unknown sync backend {backend!r} (gloo or nccl)")
    # First collective doubles as the rendezvous check: fails here, with a timeout, not later.
    probe = torch.ones(1, device="cuda" if backend == "nccl" else "cpu")
    broadcast(group, probe, timeout_s)
    return group


def broadcast_async(group: dist.ProcessGroup, tensor: torch.Tensor) -> dist.Work:
    """Start broadcasting `tensor` in place from rank 0 of `group`; finish it with `wait`.
    Every rank must start the same broadcasts in the same order."""
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)


def wait(work: dist.Work, timeout_s: float) -> None:
    """Block until `work` is done, failing after `timeout_s`."""
    if not work.wait(timedelta(seconds=timeout_s)):
        raise TimeoutError(f"weight-sync broadcast did not finish within {timeout_s:.0f} s")


def broadcast(group: dist.ProcessGroup, tensor: torch.Tensor, timeout_s: float) -> None:
    """Broadcast `tensor` in place from rank 0 of `group`, failing after `timeout_s`."""
    wait(broadcast_async(group, tensor), timeout_s)
