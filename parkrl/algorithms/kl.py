"""KL estimators between the policy and the reference policy, per token (Schulman's k1/k2/k3)."""
from __future__ import annotations

import torch

from parkrl.algorithms.registry import Registry

KL_ESTIMATORS = Registry("KL estimator", "algorithm.kl_estimator")


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
    """exp(log pi_ref - log pi) - (log pi_ref - log pi) - 1 (>= 0, low variance; GRPO's choice)."""
    d = ref_logprobs - logprobs
    return torch.exp(d) - d - 1.0
