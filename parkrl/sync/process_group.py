"""The weight-sync process group: learner rank 0 plus one rank per vLLM worker of each engine.

It is a standalone group, separate from the learner's FSDP group and from whatever vLLM sets up
inside its workers, so neither side's default group is touched. Every collective has a timeout.

gloo on CPU: a torch ProcessGroupGloo over its own TCPStore. NCCL on GPU: vLLM's
PyNcclCommunicator over a StatelessProcessGroup, not torch's ProcessGroupNCCL, whose watchdog
ends the process when a collective fails or times out; a dead engine mid-sync would take learner
rank 0 and every surviving engine down with it. Here a broadcast that does not finish raises
TimeoutError and aborts the communicator; the fleet then restarts the engine and rebuilds the
group (parkrl.workers.fleet). Callers see one interface for both: `init_sync_group`,
`broadcast_async`, `wait`, `broadcast`.
"""
from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

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


def sync_rank(engine_index: int, tp_size: int, tp_rank: int = 0) -> int:
    """Sync-group rank of tensor-parallel rank `tp_rank` of engine `engine_index` (every vLLM
    worker receives the full weights; learner rank 0 is sync rank 0). An engine's workers have
    consecutive ranks: its tp_rank 0's plus their own tp_rank."""
    if not 0 <= tp_rank < tp_size:
        raise ValueError(f"tensor-parallel rank {tp_rank} outside an engine of {tp_size} ranks")
    return 1 + engine_index * tp_size + tp_rank


def sync_world_size(engines: int, tp_size: int) -> int:
    """Ranks in the sync group: learner rank 0 plus `tp_size` vLLM workers per engine."""
    return 1 + engines * tp_size


class _Event(Protocol):
    def query(self) -> bool: ...


class NcclSyncGroup:
    """The sync group on GPU: a PyNcclCommunicator and the CUDA stream its broadcasts run on."""

    def __init__(self, comm: Any, rank: int, world_size: int) -> None:
        self.comm, self.rank, self.world_size = comm, rank, world_size
        self.stream = torch.cuda.Stream(device=comm.device)
        self.name = _nccl_name(rank, world_size)

    def broadcast_async(self, tensor: torch.Tensor) -> "NcclWork":
        if self.comm.disabled:
            raise RuntimeError(f"{self.name} was aborted after a failed broadcast; it is rebuilt when the fleet "
                               f"re-joins the sync group")
        self.stream.wait_stream(torch.cuda.current_stream(tensor.device))  # the tensor is written first
        self.comm.broadcast(tensor, src=0, stream=self.stream)
        tensor.record_stream(self.stream)  # its memory is not reused before the broadcast ends
        event = torch.cuda.Event()
        event.record(self.stream)
        return NcclWork(event, self)

    def abort(self) -> None:
        """Abort the communicator (ncclCommAbort): broadcasts stuck on a dead peer end."""
        self.comm.destroy()


@dataclass
class NcclWork:
    """A broadcast in flight on an `NcclSyncGroup`: done when its CUDA event is."""

    event: _Event
    group: Any  # NcclSyncGroup (a test passes a stand-in)


SyncGroup = dist.ProcessGroup | NcclSyncGroup


def init_sync_group(host: str, port: int, rank: int, world_size: int, backend: str, timeout_s: float) -> SyncGroup:
    """Join (rank 0: host) the sync group; blocks until all `world_size` ranks have joined.
    backend: "gloo" (CPU tensors) or "nccl" (tensors on this process's current CUDA device)."""
    timeout = timedelta(seconds=timeout_s)
    if backend == "gloo":
        store = dist.TCPStore(host, port, world_size, is_master=(rank == 0), timeout=timeout)
        group = dist.ProcessGroupGloo(dist.PrefixStore("parkrl-weight-sync", store), rank, world_size, timeout)
        probe = torch.ones(1)
    elif backend == "nccl":
        group = _nccl_group(host, port, rank, world_size, timeout_s)
        probe = torch.ones(1, device=group.comm.device)
    else:
        raise ValueError(f"unknown sync backend {backend!r} (gloo or nccl)")
    # First collective doubles as the rendezvous check: fails here, with a timeout, not later.
    broadcast(group, probe, timeout_s)
    return group


def close_sync_group(group: SyncGroup | None) -> None:
    """Let go of a sync group before joining its replacement (after an engine restart): an NCCL
    communicator holds GPU buffers until destroyed; a gloo group is freed with its last reference."""
    if isinstance(group, NcclSyncGroup) and not group.comm.disabled:
        group.abort()


def _nccl_group(host: str, port: int, rank: int, world_size: int, timeout_s: float) -> NcclSyncGroup:
    """vLLM's stateless_init_process_group (vllm.distributed.weight_transfer.nccl_common), with
    a store timeout and a barrier first: ncclCommInitRank itself would wait for a missing rank
    forever."""
    from vllm.distributed.device_communicators.pynccl import PyNcclCommunicator
    from vllm.distributed.utils import StatelessProcessGroup
    from vllm.utils.nccl import unpinned_nccl_env

    name = _nccl_name(rank, world_size)
    try:
        pg = StatelessProcessGroup.create(host=host, port=port, rank=rank, world_size=world_size,
                                          store_timeout=max(1, int(timeout_s)))
        pg.barrier(timeout=timeout_s)
    except Exception as e:
        raise TimeoutError(f"{name}: not every rank joined at {host}:{port} within {timeout_s:.0f} s "
                           f"(trainer.sync_timeout_s): {e}") from e
    with unpinned_nccl_env():
        comm = PyNcclCommunicator(pg, device=torch.cuda.current_device())
    if comm.disabled:  # vLLM disables it quietly (a no-op broadcast) when NCCL does not load
        raise RuntimeError(f"{name}: vLLM could not load the NCCL library (set VLLM_NCCL_SO_PATH to it) "
                           f"or VLLM_DISABLE_PYNCCL is set")
    return NcclSyncGroup(comm, rank, world_size)


def _nccl_name(rank: int, world_size: int) -> str:
    return f"weight-sync group (nccl, rank {rank} of {world_size})"


def broadcast_async(group: SyncGroup, tensor: torch.Tensor) -> dist.Work | NcclWork:
    """Start broadcasting `tensor` in place from rank 0 of `group`; finish it with `wait`.
    Every rank must start the same broadcasts in the same order."""
    if isinstance(group, NcclSyncGroup):
        return group.broadcast_async(tensor)
    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    return group.broadcast([tensor], opts)


def wait(work: dist.Work | NcclWork, timeout_s: float) -> None:
    """Block until `work` is done, failing after `timeout_s`. An NCCL broadcast that fails or
    times out aborts its group's communicator first (the group must be re-joined)."""
    if isinstance(work, NcclWork):
        _poll(work, timeout_s)
    elif not work.wait(timedelta(seconds=timeout_s)):
        raise TimeoutError(f"weight-sync broadcast did not finish within {timeout_s:.0f} s")


def _poll(work: NcclWork, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pause = 5e-5
    try:
        while not work.event.query():
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{work.group.name}: broadcast did not finish within {timeout_s:.0f} s "
                                   f"(trainer.sync_timeout_s); a peer is dead or stuck, communicator aborted")
            time.sleep(min(pause, left))
            pause = min(pause * 2, 5e-3)
    except BaseException:
        work.group.abort()
        raise


def broadcast(group: SyncGroup, tensor: torch.Tensor, timeout_s: float) -> None:
    """Broadcast `tensor` in place from rank 0 of `group`, failing after `timeout_s`."""
    wait(broadcast_async(group, tensor), timeout_s)
