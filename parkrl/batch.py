"""The one data structure between phases: a batch of variable-length trajectories.

Generation fills the token ids, the per-token loss mask and rollout logprobs; later phases add
named fields (rewards, advantages, old and reference logprobs) with `add`. A field, once written,
is never changed, so every phase can trust what the earlier ones wrote.

Per-token data has one form from the engines to the learner: right-padded [N, T] tensors in the
layout of `response_ids`, T the longest response (at least 1), 0 on padding. The engines' python
lists are converted once, when `parkrl.collect` builds the batch (`TrajectoryBatch.from_lists`);
phases after it index and pad tensors, never walk tokens in Python.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

_ROW_FIELDS = ("prompt_ids", "response_ids", "response_lengths", "loss_mask", "rollout_logprobs", "group_ids", "samples",
               "finish_reasons")
_TOKEN_FIELDS = ("response_ids", "loss_mask", "rollout_logprobs")
_DTYPES = {"response_ids": torch.long, "loss_mask": torch.float32, "rollout_logprobs": torch.float32}


@dataclass(eq=False)
class TrajectoryBatch:
    """N trajectories; row i is the same sample in every field.

    prompt_ids[i]        token ids the model was conditioned on (never trained on). Ragged lists:
                         the learner packs equal prompts once (`learner.share_prompts`), which
                         hashes them, and prompts have no per-token data to line up with
    response_ids         [N, T] long: token ids after the prompt (model tokens, and in multi-turn
                         rollouts also environment/tool tokens), right-padded with 0
    response_lengths     [N] long: real tokens of each row; `response_mask` is 1 on them
    loss_mask            [N, T] float32: 1 = trained on, 0 = environment/tool token or padding
    rollout_logprobs     [N, T] float32: the engine's logprob of each token, 0 on padding
    group_ids[i]         samples drawn from the same prompt share a group id
    samples[i]           the task sample (question, answer, metadata) the prompt came from

    T is the longest response (at least 1); `select` and `concat` keep it so. Fields added later
    that are [N, T] tensors (old/reference logprobs, values, GAE advantages and returns) are
    per token, in the same layout and 0 on padding; other fields are per sample.
    """

    prompt_ids: list[list[int]]
    response_ids: torch.Tensor
    response_lengths: torch.Tensor
    loss_mask: torch.Tensor
    rollout_logprobs: torch.Tensor
    group_ids: list[int]
    samples: list[dict[str, Any]]
    finish_reasons: list[str]
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.response_ids, torch.Tensor):
            raise TypeError("TrajectoryBatch holds per-token data as padded tensors; build one from ragged "
                            "lists with TrajectoryBatch.from_lists")
        n = len(self.prompt_ids)
        for name in _ROW_FIELDS:
            if len(getattr(self, name)) != n:
                raise ValueError(f"TrajectoryBatch.{name} has {len(getattr(self, name))} rows, expected {n}")
        if self.response_lengths.dtype != torch.long or self.response_lengths.dim() != 1:
            raise ValueError("TrajectoryBatch.response_lengths must be a 1-D long tensor")
        width = _width(self.response_lengths)
        for name in _TOKEN_FIELDS:
            value = getattr(self, name)
            if value.dtype != _DTYPES[name] or tuple(value.shape) != (n, width):
                raise ValueError(f"TrajectoryBatch.{name} must be a {_DTYPES[name]} tensor of shape {[n, width]} "
                                 f"(rows, longest response), got {value.dtype} {list(value.shape)}")
        padding = ~self.response_mask
        for name in _TOKEN_FIELDS:
            if getattr(self, name)[padding].any():
                raise ValueError(f"TrajectoryBatch.{name} must be 0 past each response's length")

    @staticmethod
    def from_lists(prompt_ids: list[list[int]], response_ids: list[list[int]], loss_mask: list[list[int]],
                   rollout_logprobs: list[list[float]], group_ids: list[int], samples: list[dict[str, Any]],
                   finish_reasons: list[str]) -> "TrajectoryBatch":
        """A batch from ragged per-token lists (one entry per response token in each), converted
        to padded tensors here, once. Logprobs become float32, as the learner computes in."""
        for i, (ids, mask, lps) in enumerate(zip(response_ids, loss_mask, rollout_logprobs)):
            if not len(ids) == len(mask) == len(lps):
                raise ValueError(
                    f"sample {i}: response_ids ({len(ids)}), loss_mask ({len(mask)}) and "
                    f"rollout_logprobs ({len(lps)}) must have one entry per response token"
                )
        ids, lengths = pad_ragged(response_ids, torch.long)
        return TrajectoryBatch(prompt_ids, ids, lengths, pad_ragged(loss_mask)[0], pad_ragged(rollout_logprobs)[0],
                               group_ids, samples, finish_reasons)

    def __len__(self) -> int:
        return len(self.prompt_ids)

    @property
    def width(self) -> int:
        """T: the columns of every per-token tensor (the longest response, at least 1)."""
        return self.response_ids.shape[1]

    @property
    def response_mask(self) -> torch.Tensor:
        """[N, T] bool: True on real response tokens, False on padding."""
        return torch.arange(self.width) < self.response_lengths.unsqueeze(1)

    def response_lists(self) -> list[list[int]]:
        """Response token ids as ragged lists (what tokenizers decode)."""
        return [row[:n] for row, n in zip(self.response_ids.tolist(), self.response_lengths.tolist())]

    def padded(self, rows: list[list[float]], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Ragged per-token values, one per response token of each sample, as an [N, T] tensor
        in this batch's layout (for `add`)."""
        if [len(r) for r in rows] != self.response_lengths.tolist():
            raise ValueError("per-token values must have one entry per response token of each sample")
        return pad_ragged(rows, dtype, width=self.width)[0]

    def add(self, name: str, value: Any) -> None:
        """Add a field computed by a later phase; a field can be written only once. An [N, T]
        tensor is a per-token field: it must have the batch's width and be 0 on padding."""
        if name in self.fields:
            raise KeyError(f"batch field {name!r} was already written by an earlier phase")
        if hasattr(value, "__len__") and len(value) != len(self):
            raise ValueError(f"batch field {name!r} has {len(value)} rows, expected {len(self)}")
        if isinstance(value, torch.Tensor) and value.dim() == 2:
            if value.shape[1] != self.width:
                raise ValueError(f"per-token field {name!r} has {value.shape[1]} columns, the batch's responses "
                                 f"{self.width}")
            if value[~self.response_mask].any():
                raise ValueError(f"per-token field {name!r} must be 0 past each response's length")
        self.fields[name] = value

    def __getitem__(self, name: str) -> Any:
        return self.fields[name]

    def __contains__(self, name: str) -> bool:
        return name in self.fields

    @property
    def num_response_tokens(self) -> int:
        return int(self.response_lengths.sum())

    def select(self, indices: list[int]) -> "TrajectoryBatch":
        """A new batch holding rows `indices` of every field; per-token tensors are cut to the
        longest selected response."""
        index = torch.as_tensor(indices, dtype=torch.long)
        lengths = self.response_lengths[index]
        width = _width(lengths)

        def pick(values: Any) -> Any:
            if isinstance(values, torch.Tensor):
                return values[index, :width].contiguous() if values.dim() == 2 else values[index]
            return [values[i] for i in indices]

        out = TrajectoryBatch(**{f: lengths if f == "response_lengths" else pick(getattr(self, f)) for f in _ROW_FIELDS})
        out.fields = {k: pick(v) for k, v in self.fields.items()}
        return out

    @staticmethod
    def concat(parts: list["TrajectoryBatch"]) -> "TrajectoryBatch":
        """One batch holding the rows of `parts` in order; every part must have the same fields.
        Per-token tensors are padded to the widest part."""
        names = set(parts[0].fields)
        if any(set(p.fields) != names for p in parts):
            raise ValueError("cannot concatenate batches with different fields")
        width = max(p.width for p in parts)

        def join(values: list) -> Any:
            if not isinstance(values[0], torch.Tensor):
                return [x for v in values for x in v]
            if values[0].dim() == 2:
                values = [F.pad(v, (0, width - v.shape[1])) for v in values]
            return torch.cat(values)

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
        cost = [len(p) + r for p, r in zip(self.prompt_ids, self.response_lengths.tolist())]
        shards: list[list[int]] = [[] for _ in range(parts)]
        load = [0] * parts
        for i in sorted(range(len(self)), key=lambda i: -cost[i]):
            k = min((k for k in range(parts) if len(shards[k]) < size), key=lambda k: load[k])
            shards[k].append(i)
            load[k] += cost[i]
        return [sorted(s) for s in shards]


def _width(lengths: torch.Tensor) -> int:
    """Columns of per-token tensors for rows of these lengths: the longest, at least 1."""
    return max(int(lengths.max()) if len(lengths) else 0, 1)


def pad_ragged(rows: list[list[float]], dtype: torch.dtype = torch.float32,
               width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged per-token values as a right-padded [N, T] tensor (0 on padding; T the longest row,
    at least 1, unless `width` is given) and the [N] long row lengths."""
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.long)
    width = _width(lengths) if width is None else width
    values = torch.zeros(len(rows), width, dtype=dtype)
    # numpy reads python numbers 4x faster than torch.tensor (same rounding of floats to float32)
    flat = np.fromiter(chain.from_iterable(rows), dtype=torch.empty(0, dtype=dtype).numpy().dtype, count=int(lengths.sum()))
    values[torch.arange(width) < lengths.unsqueeze(1)] = torch.from_numpy(flat)
    return values, lengths
