"""The one data structure between phases: a batch of variable-length trajectories.

Generation fills the token ids, the per-token loss mask and rollout logprobs; later phases add
named fields (rewards, advantages, old and reference logprobs) with `add`. A field, once written,
is never changed, so every phase can trust what the earlier ones wrote.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


_ROW_FIELDS = ("prompt_ids", "response_ids", "loss_mask", "rollout_logprobs", "group_ids", "samples", "finish_reasons")


@dataclass
class TrajectoryBatch:
    """N trajectories; list index i is the same sample in every field.

    prompt_ids[i]       token ids the model was conditioned on (never trained on)
    response_ids[i]     token ids after the prompt: model tokens, and in multi-turn rollouts
                        also environment/tool tokens
    loss_mask[i]        one int per response token: 1 = trained on, 0 = environment/tool token
    rollout_logprobs[i] one float per response token: the engine's logprob of that token
    group_ids[i]        samples drawn from the same prompt share a group id
    samples[i]          the task sample (question, answer, metadata) the prompt came from
    """

    prompt_ids: list[list[int]]
    response_ids: list[list[int]]
    loss_mask: list[list[int]]
    rollout_logprobs: list[list[float]]
    group_ids: list[int]
    samples: list[dict[str, Any]]
    finish_reasons: list[str]
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.prompt_ids)
        for name in _ROW_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"TrajectoryBatch.{name} has {len(getattr(self, name))} rows, expected {n}")
        for i, (ids, mask, lps) in enumerate(zip(self.response_ids, self.loss_mask, self.rollout_logprobs)):
            if not len(ids) == len(mask) == len(lps):
                raise ValueError(
                    f"sample {i}: response_ids ({len(ids)}), loss_mask ({len(mask)}) and "
                    f"rollout_logprobs ({len(lps)}) must have one entry per response token"
                )

    def __len__(self) -> int:
        return len(self.prompt_ids)

    def add(self, name: str, value: Any) -> None:
        """Add a field computed by a later phase; a field can be written only once."""
        if name in self.fields:
            raise KeyError(f"batch field {name!r} was already written by an earlier phase")
        if hasattr(value, "__len__") and len(value) != len(self):
            raise ValueError(f"batch field {name!r} has {len(value)} rows, expected {len(self)}")
        self.fields[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    @property
    def num_response_tokens(self) -> int:
        return sum(len(r) for r in self.response_ids)

    def select(self, indices: list[int]) -> "TrajectoryBatch":
        """A new batch holding rows `indices` of every field."""

        def pick(values: Any) -> Any:
            if isinstance(values, torch.Tensor):
                return values[torch.as_tensor(indices, dtype=torch.long)]
            return [values[i] for i in indices]

        out = TrajectoryBatch(**{f: pick(getattr(self, f)) for f in _ROW_FIELDS})
        out.fields = {k: pick(v) for k, v in self.fields.items()}
        return out

    @staticmethod
    def concat(parts: list["TrajectoryBatch"]) -> "TrajectoryBatch":
        """One batch holding the rows of `parts` in order; every part must have the same fields."""
        names = set(parts[0].fields)
        if any(set(p.fields) != names for p in parts):
            raise ValueError("cannot concatenate batches with different fields")

        def join(values: list) -> Any:
            return torch.cat(values) if isinstance(values[0], torch.Tensor) else [x for v in values for x in v]

        out = TrajectoryBatch(**{f: join([getattr(p, f) for p in parts]) for f in _ROW_FIELDS})
        out.fields = {k: join([p.fields[k] for p in parts]) for k in parts[0].fields}
        return out

    def shard_indices(self, parts: int) -> list[list[int]]:
        """Row indices splitting the batch into `parts` equal-size shards of similar token count.

        Longest first, each sample goes to the lightest shard that still has room, so every
        shard (one per learner rank) gets a similar amount of work. Requires len(self) % parts == 0.
        """
        if len(self) % parts:
            raise ValueError(f"{len(self)} samples do not split into {parts} equal parts")
        size = len(self) // parts
        cost = [len(p) + len(r) for p, r in zip(self.prompt_ids, self.response_ids)]
        shards: list[list[int]] = [[] for _ in range(parts)]
        load = [0] * parts
        for i in sorted(range(len(self)), key=lambda i: -cost[i]):
            k = min((k for k in range(parts) if len(shards[k]) < size), key=lambda k: load[k])
            shards[k].append(i)
            load[k] += cost[i]
        return [sorted(s) for s in shards]


def pad_ragged(rows: list[list[float]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged per-token values as a right-padded [N, T] float tensor and its 0/1 mask."""
    width = max([len(r) for r in rows] + [1])
    values = torch.zeros(len(rows), width)
    mask = torch.zeros(len(rows), width)
    for i, r in enumerate(rows):
        values[i, : len(r)] = torch.as_tensor(r, dtype=torch.float32)
        mask[i, : len(r)] = 1.0
    return values, mask
