"""Policy losses (per-token) and the aggregation of per-token values into one scalar.

A policy loss is `fn(logprobs, old_logprobs, advantages, cfg: AlgorithmConfig) -> PolicyLossOutput`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from parkrl.algorithms.registry import Registry
from parkrl.config import AlgorithmConfig

POLICY_LOSSES = Registry("policy loss", "algorithm.policy_loss")
LOSS_AGGREGATIONS = Registry("loss aggregation", "algorithm.loss_agg")


@dataclass
class PolicyLossOutput:
    loss: torch.Tensor  # per token, [B, T]
    clipped: torch.Tensor  # per token, 1.0 where the clipped branch was taken
    ratio: torch.Tensor  # per token importance ratio pi / pi_old


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    cfg: AlgorithmConfig,
) -> PolicyLossOutput:
    """PPO clipped surrogate with separate low/high clip (DAPO "clip-higher" when high > low).

    loss = max(-A * r, -A * clip(r, 1 - clip_low, 1 + clip_high)), r = exp(logp - logp_old).
    All tensors are [B, T]; advantages are already broadcast to tokens.
    """
    ratio = torch.exp(logprobs - old_logprobs)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    return PolicyLossOutput(torch.maximum(unclipped, clipped), (clipped > unclipped).float(), ratio)


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(values: torch.Tensor, mask: torch.Tensor, num_tokens: float) -> torch.Tensor:
    """Sum over every unmasked token of the mini-batch, divided by the mini-batch's token count.

    `num_tokens` is the count over the whole mini-batch (all micro-batches, all ranks), so
    gradient accumulation and data parallelism give the same gradient as one big batch.
    """
    return (values * mask).sum() / max(num_tokens, 1.0)
