"""Forward passes that return one value per response token (logprobs and entropy of the policy;
state values of the critic), and padding variable-length samples for them."""
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

    def forward(self, batch: "PaddedBatch", entropy_grad: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(logprobs [B, R], entropy [B, R]); entropy carries gradient only if `entropy_grad`."""
        hidden = self.lm.base_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state
        index = batch.predict_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        logits = self.lm.get_output_embeddings()(hidden.gather(1, index)).float() / self.temperature
        logp_all = torch.log_softmax(logits, dim=-1)
        logprobs = logp_all.gather(-1, batch.targets.unsqueeze(-1)).squeeze(-1).clone()  # not a view (FSDP2 hooks)
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
        return logprobs, entropy


class ResponseValues(nn.Module):
    """A critic: the LM's backbone plus a scalar head, read at the positions that predict each
    response token (the state before that token is emitted)."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.backbone = lm.base_model
        self.head = nn.Linear(lm.config.hidden_size, 1, device=lm.device)
        nn.init.zeros_(self.head.weight)  # start at V = 0: early advantages are plain returns
        nn.init.zeros_(self.head.bias)

    def forward(self, batch: "PaddedBatch") -> torch.Tensor:
        hidden = self.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               use_cache=False).last_hidden_state
        index = batch.predict_positions.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return self.head(hidden.gather(1, index)).squeeze(-1).float().clone()  # not a view (FSDP2 hooks)


@dataclass
class PaddedBatch:
    """Right-padded samples: [B, L] inputs and [B, R] response-aligned tensors."""

    input_ids: torch.Tensor  # [B, L] prompt + response, right-padded
    attention_mask: torch.Tensor  # [B, L]
    predict_positions: torch.Tensor  # [B, R] position whose output predicts response token r
    targets: torch.Tensor  # [B, R] response token ids (0 where padded)
    mask: torch.Tensor  # [B, R] float: loss mask, 0 on padding
    lengths: list[int]  # response length per sample

    def to(self, device: torch.device | str) -> "PaddedBatch":
        return PaddedBatch(
            self.input_ids.to(device), self.attention_mask.to(device), self.predict_positions.to(device),
            self.targets.to(device), self.mask.to(device), self.lengths,
        )

    def pad_rows(self, rows: list[list[float]]) -> torch.Tensor:
        """Per-response-token values (ragged lists) as a [B, R] float tensor, 0 on padding."""
        out = torch.zeros(self.targets.shape, dtype=torch.float32)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.as_tensor(r, dtype=torch.float32)
        return out.to(self.targets.device)

    def unpad(self, values: torch.Tensor) -> list[list[float]]:
        """A [B, R] tensor back to ragged per-sample lists."""
        return [values[i, :n].tolist() for i, n in enumerate(self.lengths)]


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
