"""KL estimators between the policy and the reference policy, per token (Schulman's k1/k2/k3),
and the clamped log-ratio every ratio in parkrl's losses is built from."""
from __future__ import annotations

import torch

from parkrl.algorithms.registry import Registry

KL_ESTIMATORS = Registry("KL estimator", "algorithm.kl_estimator")
LOG_RATIO_CLAMP = 20.0  # exp(20) ~ 5e8: beyond any real ratio, and finite (and its square too) in fp32


def clamped_log_ratio(logprobs: torch.Tensor, other: torch.Tensor) -> torch.Tensor:
    """logprobs - other clamped to [-20, 20], so that exp() of it is finite: a ratio of two
    policies on a token one of them nearly never samples stays a large number, not inf or NaN
    (verl clamps its PPO log-ratio and its k3 input the same way)."""
    return (logprobs - other).clamp(-LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)


@KL_ESTIMATORS.register("k1")
def k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """log pi - log pi_ref (unbiased, high variance, can be negative)."""
    return logprobs - ref_logprobs


@KL_ESTIMATORS.register("k2")
def k2(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """0.5 * (log pi - log pi_ref)^2."""
    return 0.5 * (logprobs - ref_logprobs) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """exp(d) - d - 1 with d = log pi_ref - log pi clamped to [-20, 20] (>= 0, low variance;
    GRPO's choice). Estimates KL(pi || pi_ref) from tokens sampled by pi."""
    d = clamped_log_ratio(ref_logprobs, logprobs)
    return torch.exp(d) - d - 1.0
