"""Forward passes that return one value per response token (logprobs and entropy of the policy;
state values of the critic), and padding variable-length samples for them.

Two batch layouts feed the same heads:
- `PaddedBatch`: every sample is one right-padded row, prompt + response.
- `SharedPromptBatch`: samples of one group share their prompt, so each group is one packed
  row, its prompt once followed by every sample's suffix (last prompt token + response), with
  a block mask: each suffix attends to the prompt and to itself, never to another suffix.
  The outputs and gradients are the same (tests/test_response.py); a GRPO group of 8
  computes its prompt once instead of 8 times, in one forward (so FSDP2 and ZeRO-3 gather
  each layer once, as usual).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class ResponseLogprobs(nn.Module):
    """Wraps an HF causal LM so one forward returns logprobs and entropy of response tokens only.

    The vocabulary projection runs only at the positions that predict response tokens, so the
    full [batch, sequence, vocab] logits (49k wide for SmolLM2) are never materialised. Being
    an nn.Module, it is the FSDP2 root: its forward unshards the embedding and output head.
    """

    def __init__(self, lm: nn.Module, temperature: float = 1.0) -> None:
        super().__init__()
        self.lm = lm
        self.temperature = max(temperature, 1e-6) if temperature > 0 else 1.0

    def forward(self, batch: "PaddedBatch | SharedPromptBatch", entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs [B, R], entropy [B, R]); entropy carries gradient only if `entropy_grad`."""
        hidden = response_hidden(self.lm.base_model, batch)
        valid = batch.valid  # the vocabulary projection skips padding: [N, V] logits, N real tokens
        logits = self.lm.get_output_embeddings()(hidden[valid]).float() / self.temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        logprobs = logp_all.gather(-1, batch.targets[valid].unsqueeze(-1)).squeeze(-1)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        def unflatten(values: torch.Tensor) -> torch.Tensor:  # [N] -> [B, R], 0 on padding; differentiable
            return values.new_zeros(valid.shape).masked_scatter(valid, values)

        return unflatten(logprobs), unflatten(entropy)


class ResponseValues(nn.Module):
    """A critic: the LM's backbone plus a scalar head, read at the positions that predict each
    response token (the state before that token is emitted)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.backbone = lm.base_model
        self.head = nn.Linear(lm.config.hidden_size, 1, device=lm.device)
        nn.init.zeros_(self.head.weight)  # start at V = 0: early advantages are plain returns
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: "PaddedBatch | SharedPromptBatch") -> torch.Tensor:
        return self.head(response_hidden(self.backbone, batch)).squeeze(-1).float().clone()  # not a view (FSDP2 hooks)


def response_hidden(backbone: nn.Module, batch: "PaddedBatch | SharedPromptBatch") -> torch.Tensor:
    """[B, R, H] last hidden states at the positions that predict each response token."""
    if isinstance(batch, PaddedBatch):
        hidden = backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).last_hidden_state
        index = batch.predict_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return hidden.gather(1, index)
    seg = batch.segments  # [G, L]: 0 prompt, j > 0 the j-th suffix of the row, -1 padding
    q, k = seg.unsqueeze(-1), seg.unsqueeze(-2)
    length = seg.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=seg.device).tril()
    allowed = (causal & ((k == 0) | (k == q)) & (k >= 0)).unsqueeze(1)  # [G, 1, L, L]
    if getattr(backbone.config, "_attn_implementation", "sdpa") != "sdpa":  # eager adds the mask
        dtype = backbone.get_input_embeddings().weight.dtype
        allowed = torch.zeros(allowed.shape, dtype=dtype, device=seg.device).masked_fill(~allowed, torch.finfo(dtype).min)
    hidden = backbone(input_ids=batch.input_ids, attention_mask=allowed, position_ids=batch.position_ids,
                      use_cache=False).last_hidden_state
    return hidden[batch.gather_rows.unsqueeze(-1), batch.gather_cols]


class _ResponseRows:
    """Shared by both layouts: [B, R] response-aligned `targets` and `mask`, and `lengths`."""

    targets: torch.Tensor
    mask: torch.Tensor
    lengths: list[int]

    def to(self, device: torch.device | str):
        """The same batch with every tensor on `device`."""
        return type(self)(**{k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()})

    @property
    def valid(self) -> torch.Tensor:
        """[B, R] bool: True at real response tokens, False on padding."""
        lengths = torch.tensor(self.lengths, device=self.targets.device)
        return torch.arange(self.targets.shape[1], device=self.targets.device) < lengths.unsqueeze(1)

    def pad_rows(self, rows: list[list[float]]) -> torch.Tensor:
        """Per-response-token values (ragged lists) as a [B, R] float tensor, 0 on padding."""
        out = torch.zeros(self.targets.shape, dtype=torch.float32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.float32)
        return out.to(self.targets.device)

    def unpad(self, values: torch.Tensor) -> list[list[float]]:
        """A [B, R] tensor back to ragged per-sample lists."""
        return [values[i, :n].tolist() for i, n in enumerate(self.lengths)]


@dataclass
class PaddedBatch(_ResponseRows):
    """Right-padded samples: [B, L] inputs and [B, R] response-aligned tensors."""

    input_ids: torch.Tensor  # [B, L] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, L]
    predict_positions: torch.Tensor  # [B, R] position whose output predicts response token r
    targets: torch.Tensor  # [B, R] response token ids (0 where padded)
    mask: torch.Tensor  # [B, R] float: loss mask, 0 on padding
    lengths: list[int]  # response length per sample


@dataclass
class SharedPromptBatch(_ResponseRows):
    """One packed row per distinct prompt: the prompt less its last token, then each sample's
    suffix (last prompt token + response less its last token), whose outputs predict the
    response tokens. `segments` drives the block mask (see `response_hidden`)."""

    input_ids: torch.Tensor  # [G, L], right-padded
    position_ids: torch.Tensor  # [G, L]: each suffix continues its prompt's positions
    segments: torch.Tensor  # [G, L]: 0 prompt, j > 0 the row's j-th suffix, -1 padding
    gather_rows: torch.Tensor  # [B] packed row of each sample
    gather_cols: torch.Tensor  # [B, R] column of the output that predicts response token r
    targets: torch.Tensor  # [B, R]
    mask: torch.Tensor  # [B, R] float loss mask
    lengths: list[int]


def share_prompts(prompts: list[list[int]], responses: list[list[int]], loss_mask: list[list[int]],
                  pad_id: int) -> SharedPromptBatch:
    """Build a SharedPromptBatch: samples with equal prompts share one packed row."""
    if min(len(p) for p in prompts) < 1:
        raise ValueError("every prompt needs at least one token")
    rows: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        rows.setdefault(tuple(p[:-1]), []).append(i)
    packed, positions, segments = [], [], []
    b, rmax = len(prompts), max(1, max(len(r) for r in responses))
    gather_rows = torch.zeros(b, dtype=torch.long)
    gather_cols = torch.zeros((b, rmax), dtype=torch.long)
    for g, (prefix, members) in enumerate(rows.items()):
        ids, pos, seg = list(prefix), list(range(len(prefix))), [0] * len(prefix)
        for j, i in enumerate(members, start=1):
            suffix = [prompts[i][-1]] + responses[i][:-1] if responses[i] else []
            gather_rows[i] = g
            gather_cols[i, : len(suffix)] = torch.arange(len(ids), len(ids) + len(suffix))
            ids += suffix
            pos += range(len(prefix), len(prefix) + len(suffix))
            seg += [j] * len(suffix)
        packed.append(ids), positions.append(pos), segments.append(seg)
    width = max(len(ids) for ids in packed)
    input_ids = torch.full((len(packed), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(packed), width), dtype=torch.long)
    seg_t = torch.full((len(packed), width), -1, dtype=torch.long)
    for g, (ids, pos, seg) in enumerate(zip(packed, positions, segments)):
        input_ids[g, : len(ids)], position_ids[g, : len(pos)], seg_t[g, : len(seg)] = (
            torch.tensor(ids, dtype=torch.long), torch.tensor(pos, dtype=torch.long), torch.tensor(seg, dtype=torch.long))
    targets = torch.zeros((b, rmax), dtype=torch.long)
    mask = torch.zeros((b, rmax), dtype=torch.float32)
    for i, (r, m) in enumerate(zip(responses, loss_mask)):
        if r:
            targets[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = torch.tensor(m, dtype=torch.float32)
    return SharedPromptBatch(input_ids, position_ids, seg_t, gather_rows, gather_cols, targets, mask,
                             [len(r) for r in responses])
def pad_samples(prompts: list[list[int]], responses: list[list[int]], loss_mask: list[list[int]],
                pad_id: int) -> PaddedBatch:
    """Build a PaddedBatch; response token r of a sample with prompt length P sits at position
    P + r and is predicted by the output at position P + r - 1."""
    seqs = [p + r for p, r in zip(prompts, responses)]
    width = max(len(s) for s in seqs)
    rmax = max(1, max(len(r) for r in responses))
    b = len(seqs)
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((b, width), dtype=torch.long)
    positions = torch.zeros((b, rmax), dtype=torch.long)
    targets = torch.zeros((b, rmax), dtype=torch.long)
    mask = torch.zeros((b, rmax), dtype=torch.float32)
    for i, (p, r, m) in enumerate(zip(prompts, responses, loss_mask)):
        input_ids[i, : len(p) + len(r)] = torch.tensor(p + r)
        attention_mask[i, : len(p) + len(r)] = 1
        if r:
            positions[i, : len(r)] = torch.arange(len(p) - 1, len(p) + len(r) - 1)
            targets[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = torch.tensor(m, dtype=torch.float32)
    return PaddedBatch(input_ids, attention_mask, positions, targets, mask, [len(r) for r in responses])
