"""Rollout correction: importance weights from the policy that generated the tokens (the engine)
to the learner's old policy, per token on [B, T] tensors.

The engines sample with their own kernels and, on GPUs and bf16 CPUs, in bf16; the learner
recomputes the same tokens' logprobs with its own. Even with identical weights the two differ
(`rollout/logprob_diff` 0.006-0.045 in bf16, about 1e-6 in fp32), and one step off the engines
are an update behind on purpose. The policy gradient assumes the samples came from the policy
being trained, so each token's loss is reweighted by

    r_t = pi_old(y_t) / pi_rollout(y_t) = exp(delta_t),   delta_t = logp_old_t - logp_rollout_t

(delta clamped to [-20, 20]), in one of these modes (`algorithm.rollout_correction`):

    off       w = 1
    tis       w_t = min(r_t, C)                               token-level truncated IS
    seq_tis   w_t = min(prod_s r_s, C)  for every t of the sequence     sequence-level TIS
    mask      w_t = r_t if low <= r_t <= high else 0          token-level masked IS (IcePop)
    seq_mask  w_t = g if low <= g <= high else 0,  g = exp(mean_s delta_s)   sequence-level (MIS)

with C = `algorithm.rollout_is_cap`, [low, high] = [`algorithm.rollout_is_low`,
`algorithm.rollout_is_high`]. The sequence mask uses the geometric mean ratio g (one band for
every length: the product of 500 tokens' ratios drifts by exp(500 * 0.02)); sequence TIS uses
the product, the sequence's true likelihood ratio, which the cap bounds. Weights carry no
gradient. `auto` picks `tis` when either side computes in bf16 or one step off, `off` when both
are fp32 on-policy (where the diff is ~1e-6 and every weight is 1 to 5 decimals).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from parkrl.algorithms.kl import clamped_log_ratio, k3
from parkrl.config import ROLLOUT_CORRECTIONS as MODES
from parkrl.config import AlgorithmConfig


def resolve_mode(mode: str, learner_dtype: str, engine_dtype: str, one_step_off: bool) -> str:
    """`algorithm.rollout_correction` with `auto` resolved: `tis` when the learner or the engines
    compute in a 16-bit dtype (or in different dtypes) or the batch is generated one step off,
    else `off`. dtypes are names such as "float32" or "torch.bfloat16"."""
    if mode != "auto":
        return mode
    dtypes = {str(learner_dtype).removeprefix("torch."), str(engine_dtype).removeprefix("torch.")}
    return "tis" if one_step_off or dtypes != {"float32"} else "off"


@dataclass
class Correction:
    """Per-token results of `rollout_correction`, [B, T], no gradient."""

    weights: torch.Tensor  # multiplies each token's policy loss; 1 where the mask is 0
    capped: torch.Tensor  # 1.0 where a TIS cap truncated the weight
    masked: torch.Tensor  # 1.0 where a mask mode zeroed the token (outside [low, high])


def rollout_correction(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor, mask: torch.Tensor,
                       mode: str, cfg: AlgorithmConfig) -> Correction:
    """The importance weights of `mode` (see the module doc) for tokens where `mask` is set."""
    on = mask.bool()
    delta = torch.where(on, clamped_log_ratio(old_logprobs.detach(), rollout_logprobs), 0.0).float()
    ones, zeros = torch.ones_like(delta), torch.zeros_like(delta)
    if mode == "off":
        return Correction(ones, zeros, zeros)
    if mode in ("tis", "seq_tis"):
        if mode == "seq_tis":  # log of the product of the sequence's ratios, on each of its tokens
            delta = delta.sum(-1, keepdim=True).expand_as(delta)
        log_cap = math.log(cfg.rollout_is_cap)
        weights = torch.where(on, torch.exp(delta.clamp(max=log_cap)), ones)
        return Correction(weights, ((delta > log_cap) & on).float(), zeros)
    if mode in ("mask", "seq_mask"):
        if mode == "seq_mask":  # the geometric mean ratio of the sequence
            delta = (delta.sum(-1, keepdim=True) / mask.sum(-1, keepdim=True).clamp(min=1)).expand_as(delta)
        ratio = torch.exp(delta)
        outside = on & ((ratio < cfg.rollout_is_low) | (ratio > cfg.rollout_is_high))
        weights = torch.where(outside, zeros, torch.where(on, ratio, ones))
        return Correction(weights, zeros, outside.float())
    raise ValueError(f"algorithm.rollout_correction={mode!r}: choose one of {', '.join(MODES)} (auto is resolved "
                     f"first, by resolve_mode)")


def rollout_kl(old_logprobs: torch.Tensor, rollout_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of KL(pi_rollout || pi_old) from tokens the engine sampled:
    r - 1 - log r with r = pi_old / pi_rollout (>= 0; `rollout/kl`): the k3 estimator with the
    engine as the sampling policy."""
    return k3(rollout_logprobs, old_logprobs.detach())
