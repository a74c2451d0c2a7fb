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
import torch.nn.functional as F
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

    def rows_of(self, values: torch.Tensor, rows: list[int]) -> torch.Tensor:
        """Rows `rows` of a per-token [N, T] tensor in a batch's padded layout (0 on padding, T at
        least this micro-batch's longest response) as this micro-batch's [B, R] float32, on its device."""
        picked = values[torch.as_tensor(rows, dtype=torch.long), : self.targets.shape[1]]
        return picked.float().contiguous().to(self.targets.device)

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


def _response_rows(responses: torch.Tensor, lengths: list[int], loss_mask: torch.Tensor
                   ) -> tuple[int, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(R, valid [B, R], targets [B, R], mask [B, R]) of right-padded responses, R the longest
    (at least 1); targets and mask 0 on padding whatever the inputs hold there."""
    rmax = max([1, *lengths])
    width = responses.shape[1]
    if width < rmax:  # the inputs are at least as wide as the longest response: pad to R
        responses, loss_mask = F.pad(responses, (0, rmax - width)), F.pad(loss_mask, (0, rmax - width))
    valid = torch.arange(rmax) < torch.tensor(lengths, dtype=torch.long).unsqueeze(1)
    targets = torch.where(valid, responses[:, :rmax].long(), 0)
    mask = torch.where(valid, loss_mask[:, :rmax].float(), 0.0)
    return rmax, valid, targets, mask


def share_prompts(prompts: list[list[int]], responses: torch.Tensor, lengths: list[int], loss_mask: torch.Tensor,
                  pad_id: int) -> SharedPromptBatch:
    """Build a SharedPromptBatch: samples with equal prompts share one packed row. `responses`
    and `loss_mask` are [B, T] right-padded (T >= the longest of `lengths`), as in a
    TrajectoryBatch."""
    if min(len(p) for p in prompts) < 1:
        raise ValueError("every prompt needs at least one token")
    lengths = [int(n) for n in lengths]
    rmax, _, targets, mask = _response_rows(responses, lengths, loss_mask)
    rows: dict[tuple[int, ...], list[int]] = {}
    for i, p in enumerate(prompts):
        rows.setdefault(tuple(p[:-1]), []).append(i)
    packed, positions, segments = [], [], []
    b = len(prompts)
    gather_rows = torch.zeros(b, dtype=torch.long)
    gather_cols = torch.zeros((b, rmax), dtype=torch.long)
    for g, (prefix, members) in enumerate(rows.items()):
        ids, pos = [torch.tensor(prefix, dtype=torch.long)], [torch.arange(len(prefix))]
        seg = [torch.zeros(len(prefix), dtype=torch.long)]
        end = len(prefix)
        for j, i in enumerate(members, start=1):
            gather_rows[i] = g
            n = lengths[i]
            if n:  # suffix: the last prompt token, then the response less its last token
                ids.append(torch.cat([torch.tensor(prompts[i][-1:], dtype=torch.long), responses[i, : n - 1].long()]))
                gather_cols[i, :n] = torch.arange(end, end + n)
                pos.append(torch.arange(len(prefix), len(prefix) + n))
                seg.append(torch.full((n,), j, dtype=torch.long))
                end += n
        packed.append(torch.cat(ids)), positions.append(torch.cat(pos)), segments.append(torch.cat(seg))
    width = max(len(ids) for ids in packed)
    input_ids = torch.full((len(packed), width), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(packed), width), dtype=torch.long)
    seg_t = torch.full((len(packed), width), -1, dtype=torch.long)
    for g, (ids, pos, seg) in enumerate(zip(packed, positions, segments)):
        input_ids[g, : len(ids)], position_ids[g, : len(pos)], seg_t[g, : len(seg)] = ids, pos, seg
    return SharedPromptBatch(input_ids, position_ids, seg_t, gather_rows, gather_cols, targets, mask, lengths)


def pad_samples(prompts: list[list[int]], responses: torch.Tensor, lengths: list[int], loss_mask: torch.Tensor,
                pad_id: int) -> PaddedBatch:
    """Build a PaddedBatch; response token r of a sample with prompt length P sits at position
    P + r and is predicted by the output at position P + r - 1. `responses` and `loss_mask` are
    [B, T] right-padded (T >= the longest of `lengths`), as in a TrajectoryBatch."""
    lengths = [int(n) for n in lengths]
    rmax, valid, targets, mask = _response_rows(responses, lengths, loss_mask)
    b = len(prompts)
    plen = torch.tensor([len(p) for p in prompts], dtype=torch.long)
    width = int((plen + torch.tensor(lengths, dtype=torch.long)).max())
    input_ids = torch.full((b, width), pad_id, dtype=torch.long)
    for i, p in enumerate(prompts):
        input_ids[i, : len(p)] = torch.tensor(p, dtype=torch.long)
    at = plen.unsqueeze(1) + torch.arange(rmax)  # [B, R] position of response token r
    rows, cols = valid.nonzero(as_tuple=True)
    input_ids[rows, at[rows, cols]] = targets[rows, cols]
    attention_mask = (torch.arange(width) < (plen + torch.tensor(lengths, dtype=torch.long)).unsqueeze(1)).long()
    positions = torch.where(valid, at - 1, 0)
    return PaddedBatch(input_ids, attention_mask, positions, targets, mask, lengths)
