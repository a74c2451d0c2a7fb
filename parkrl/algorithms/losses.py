"""Policy losses (per token) and the aggregation of per-token values into one scalar.

A policy loss is `fn(logprobs, old_logprobs, advantages, mask, cfg) -> PolicyLossOutput` on
[B, T] tensors (advantages already broadcast to tokens). An aggregation is
`fn(values [B, T], mask [B, T], norm: LossNorm) -> scalar`.

The learner does not compute samples whose advantage is 0 on every token (with no KL or
entropy term and no critic): a loss that is a multiple of the advantage has no gradient there.
A loss that does (a regulariser of its own) registers with `needs_zero_advantage_rows=True`,
and then every sample is computed.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from parkrl.algorithms.kl import clamped_log_ratio
from parkrl.algorithms.registry import Registry
from parkrl.config import AlgorithmConfig

F = TypeVar("F", bound=Callable)


class PolicyLossRegistry(Registry):
    """A Registry of policy losses; each declares whether it can have a gradient on samples
    whose advantage is 0 (`register(name, needs_zero_advantage_rows=True)`: the learner then
    computes those samples too)."""

    def __init__(self, kind: str, config_key: str) -> None:
        super().__init__(kind, config_key, traits={"needs_zero_advantage_rows": False})

    def needs_zero_advantage_rows(self, name: str) -> bool:
        return self.trait(name, "needs_zero_advantage_rows")


POLICY_LOSSES = PolicyLossRegistry("policy loss", "algorithm.policy_loss")
LOSS_AGGREGATIONS = Registry("loss aggregation", "algorithm.loss_agg")


@dataclass
class PolicyLossOutput:
    """What a policy loss returns (`from parkrl.algorithms import PolicyLossOutput`); three
    [B, T] tensors, read only where the mask is 1."""

    loss: torch.Tensor  # per token, [B, T]; aggregated by algorithm.loss_agg, with gradient (reported as loss/policy)
    clipped: torch.Tensor  # per token, 1.0 where a clipped branch was taken, else 0.0 (loss/clip_frac); no gradient needed
    ratio: torch.Tensor  # per token importance ratio pi / pi_old the loss used (policy/ratio_dev = mean |ratio - 1|)


@dataclass(frozen=True)
class LossNorm:
    """Sizes of the whole mini-batch (all micro-batches, all ranks) that losses divide by, so
    gradient accumulation and data parallelism give the gradient of one big batch."""

    tokens: float  # trained (mask = 1) tokens
    sequences: float  # samples
    max_new_tokens: int  # the generation budget, Dr.GRPO's constant length normaliser


def _clip_surrogate(ratio: torch.Tensor, advantages: torch.Tensor, cfg: AlgorithmConfig) -> PolicyLossOutput:
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - cfg.clip_low, 1.0 + cfg.clip_high)
    loss = torch.maximum(unclipped, clipped)
    was_clipped = clipped > unclipped
    if cfg.dual_clip_c > 0:  # dual clip: for A < 0 bound the loss by -A * c
        bound = -advantages * cfg.dual_clip_c
        dual = (advantages < 0) & (loss > bound)
        loss = torch.where(dual, bound, loss)
        was_clipped = was_clipped | dual
    return PolicyLossOutput(loss, was_clipped.float(), ratio)


@POLICY_LOSSES.register("ppo_clip")
def ppo_clip(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
             mask: torch.Tensor, cfg: AlgorithmConfig) -> PolicyLossOutput:
    """PPO clipped surrogate with separate low/high clip (DAPO "clip-higher" when high > low):

        loss = max(-A r, -A clip(r, 1 - clip_low, 1 + clip_high)),  r = exp(logp - logp_old)

    (the log-ratio clamped to [-20, 20], so extreme ratios stay finite).

    With `dual_clip_c = c > 1`, tokens with A < 0 are further bounded: loss = min(loss, -A c).
    """
    return _clip_surrogate(torch.exp(clamped_log_ratio(logprobs, old_logprobs)), advantages, cfg)


@POLICY_LOSSES.register("gspo")
def gspo(logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor,
         mask: torch.Tensor, cfg: AlgorithmConfig) -> PolicyLossOutput:
    """GSPO: one importance ratio per sequence, the geometric mean of its token ratios,

        s_i = exp(mean_t (logp_t - logp_old_t)),   s_i,t = sg(s_i) * exp(logp_t - sg(logp_t)),

    clipped like PPO (GSPO uses small ranges, e.g. clip_low 3e-4, clip_high 4e-4). s_i,t equals
    s_i in value; its gradient is s_i * grad logp_t, the paper's token-level form.
    """
    lengths = mask.sum(-1).clamp(min=1)
    seq_log_ratio = (clamped_log_ratio(logprobs, old_logprobs) * mask).sum(-1) / lengths
    seq_ratio = torch.exp(seq_log_ratio).detach().unsqueeze(-1)
    ratio = seq_ratio * torch.exp(logprobs - logprobs.detach())
    return _clip_surrogate(ratio, advantages, cfg)


@LOSS_AGGREGATIONS.register("token-mean")
def token_mean(values: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
    """Sum over every trained token of the mini-batch / its token count (DAPO's token-level loss:
    long and short samples weigh the same per token)."""
    return (values * mask).sum() / max(norm.tokens, 1.0)


@LOSS_AGGREGATIONS.register("seq-mean-token-mean")
def seq_mean_token_mean(values: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
    """Mean over tokens within each sample, then mean over the mini-batch's samples
    (original GRPO: every sample weighs the same, whatever its length)."""
    per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return per_seq.sum() / max(norm.sequences, 1.0)


@LOSS_AGGREGATIONS.register("seq-mean-token-sum-norm")
def seq_mean_token_sum_norm(values: torch.Tensor, mask: torch.Tensor, norm: LossNorm) -> torch.Tensor:
    """Sum over tokens / (samples x max_new_tokens): Dr.GRPO's constant normaliser, which
    removes the length bias of per-sample means."""
    return (values * mask).sum() / max(norm.sequences * norm.max_new_tokens, 1.0)


def logprob_diff_sum(logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of |logprob - rollout logprob| over the tokens where `mask` is set: `rollout/logprob_diff`
    (the engines' logprobs against the learner's, same weights unless one step off) is this over
    the trained tokens divided by their count. Sums in the inputs' dtype."""
    return torch.where(mask.bool(), (logprobs - rollout_logprobs).abs(), 0.0).sum()
