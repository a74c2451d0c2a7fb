"""Bucketed transfer of a model's named tensors over the sync group.

The sender and receivers agree on a list of `TensorMeta` (name, dtype, shape), computed once
by the learner. Tensors are concatenated into flat buckets of at most `bucket_bytes` (one dtype
per bucket) and broadcast bucket by bucket; the receiver slices them back into named tensors.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator

import torch
import torch.distributed as dist

from parkrl.sync.group import broadcast

DEFAULT_BUCKET_BYTES = 64 << 20


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # e.g. "bfloat16"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty(0, dtype=getattr(torch, self.dtype)).element_size()

    def to_wire(self) -> list:
        """Plain lists survive every RPC layer (Ray pickle, vLLM msgpack)."""
        return [self.name, self.dtype, list(self.shape)]

    @staticmethod
    def from_wire(row: list) -> "TensorMeta":
        return TensorMeta(row[0], row[1], tuple(row[2]))


def plan_buckets(metas: list[TensorMeta], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[int]]:
    """Group consecutive tensors of one dtype into buckets of at most `bucket_bytes`
    (a tensor larger than that gets a bucket of its own)."""
    buckets: list[list[int]] = []
    size = 0
    for i, m in enumerate(metas):
        if buckets and size + m.nbytes <= bucket_bytes and metas[buckets[-1][0]].dtype == m.dtype:
            buckets[-1].append(i)
            size += m.nbytes
        else:
            buckets.append([i])
            size = m.nbytes
    return buckets


def send_tensors(group: dist.ProcessGroup, tensors: list[torch.Tensor], metas: list[TensorMeta],
                 timeout_s: float, bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> int:
    """Rank 0: broadcast `tensors` (matching `metas`) bucket by bucket; returns bytes sent."""
    sent = 0
    for bucket in plan_buckets(metas, bucket_bytes):
        flat = torch.cat([tensors[i].reshape(-1).to(getattr(torch, metas[i].dtype)) for i in bucket])
        broadcast(group, flat, timeout_s)
        sent += flat.numel() * flat.element_size()
    return sent


def receive_tensors(group: dist.ProcessGroup, metas: list[TensorMeta], timeout_s: float,
                    device: str | torch.device = "cpu",
                    bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> Iterator[tuple[str, torch.Tensor]]:
    """Ranks > 0: receive every bucket and yield (name, tensor) in `metas` order."""
    for bucket in plan_buckets(metas, bucket_bytes):
        dtype = getattr(torch, metas[bucket[0]].dtype)
        flat = torch.empty(sum(metas[i].numel for i in bucket), dtype=dtype, device=device)
        broadcast(group, flat, timeout_s)
        offset = 0
        for i in bucket:
            m = metas[i]
            yield m.name, flat[offset: offset + m.numel].view(m.shape)
            offset += m.numel


def metas_of(named: Iterable[tuple[str, torch.Tensor]], dtype: torch.dtype | None) -> list[TensorMeta]:
    """Metadata of named tensors, as they will travel (cast to `dtype` when given)."""
    return [TensorMeta(n, str(dtype or t.dtype).removeprefix("torch."), tuple(t.shape)) for n, t in named]
