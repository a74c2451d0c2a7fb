"""Weights handed between processes on the same GPU by CUDA IPC (colocated mode): the learner
shares its full tensors, the engine on that GPU opens them without a copy through the host.
A shared tensor must stay alive in the sharing process until the receiver has loaded it.
The handles travel as pickled bytes: vLLM's RPC layer (msgpack) carries bytes, not the
functions and dtypes inside them. They carry the sharing GPU's UUID, so each engine gets the
handles of the learner rank on its own GPU whatever the two roles' rank orders are."""
from __future__ import annotations

import pickle

import torch

_DEVICE_ARG = 6  # position of the device index in torch's rebuild_cuda_tensor arguments


def gpu_uuid(device_index: int) -> str:
    """The UUID of this process's CUDA device `device_index` (the same in every process)."""
    return str(torch.cuda.get_device_properties(device_index).uuid)


def share(tensors: dict[str, torch.Tensor]) -> bytes:
    """CUDA IPC handles for `tensors` (which the caller keeps alive, all on one GPU), as bytes."""
    from torch.multiprocessing.reductions import reduce_tensor

    index = next(iter(tensors.values())).device.index if tensors else torch.cuda.current_device()
    return pickle.dumps({"gpu": gpu_uuid(index), "tensors": [(name, reduce_tensor(t)) for name, t in tensors.items()]})


def shared_gpu(handles: bytes) -> str:
    """The UUID of the GPU whose tensors `share` made `handles` for."""
    return pickle.loads(handles)["gpu"]


def pair_by_gpu(shared_gpus: list[str], engine_gpus: list[str]) -> list[int]:
    """For each engine (its GPU's UUID, in engine order), the index of the learner rank that
    shared from the same GPU (`shared_gpus`, in learner rank order). Raises naming both sides
    when an engine's GPU has no handles."""
    rank_of = {uuid: rank for rank, uuid in enumerate(shared_gpus)}
    missing = [f"rollout[{i}] on {uuid}" for i, uuid in enumerate(engine_gpus) if uuid not in rank_of]
    if missing:
        learners = ", ".join(f"learner[{r}] on {uuid}" for r, uuid in enumerate(shared_gpus))
        raise RuntimeError(f"colocated weight sharing: no learner rank shares a GPU with {', '.join(missing)} "
                           f"(shared from: {learners}); resources.colocate needs engine and learner rank on one GPU")
    return [rank_of[uuid] for uuid in engine_gpus]


def open_shared(handles: bytes, device_index: int) -> list[tuple[str, torch.Tensor]]:
    """The tensors behind `share`'s handles, mapped into this process on `device_index` (this
    process's index of the same physical GPU, checked by UUID)."""
    payload = pickle.loads(handles)
    here = gpu_uuid(device_index)
    if payload["gpu"] != here:
        raise RuntimeError(f"CUDA IPC handles from GPU {payload['gpu']} sent to an engine on GPU {here}")
    out = []
    for name, (rebuild, args) in payload["tensors"]:
        args = list(args)
        args[_DEVICE_ARG] = device_index
        out.append((name, rebuild(*args)))
    return out
