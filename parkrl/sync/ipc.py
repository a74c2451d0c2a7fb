"""Weights handed between processes on the same GPU by CUDA IPC (colocated mode): the learner
shares its full tensors, the engine on that GPU opens them without a copy through the host.
A shared tensor must stay alive in the sharing process until the receiver has loaded it.
The handles travel as pickled bytes: vLLM's RPC layer (msgpack) carries bytes, not the
functions and dtypes inside them."""
from __future__ import annotations

import pickle

import torch

_DEVICE_ARG = 6  # position of the device index in torch's rebuild_cuda_tensor arguments


def share(tensors: dict[str, torch.Tensor]) -> bytes:
    """CUDA IPC handles for `tensors` (which the caller keeps alive), as bytes."""
    from torch.multiprocessing.reductions import reduce_tensor

    return pickle.dumps([(name, reduce_tensor(t)) for name, t in tensors.items()])


def open_shared(handles: bytes, device_index: int) -> list[tuple[str, torch.Tensor]]:
    """The tensors behind `share`'s handles, mapped into this process on `device_index` (this
    process's index of the same physical GPU)."""
    out = []
    for name, (rebuild, args) in pickle.loads(handles):
        args = list(args)
        args[_DEVICE_ARG] = device_index
        out.append((name, rebuild(*args)))
    return out
