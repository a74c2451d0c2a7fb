"""Advantage estimators: per-sample rewards -> per-sample advantages.

An estimator is `fn(rewards [N], group_ids [N], cfg: AlgorithmConfig) -> advantages [N]`.
"""
from __future__ import annotations

import torch

from parkrl.algorithms.registry import Registry
from parkrl.config import AlgorithmConfig

ADVANTAGES = Registry("advantage estimator", "algorithm.advantage")

EPS = 1e-6


def group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample mean and (unbiased) std of the sample's group; std is 0 for groups of size 1."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    values = values.double()
    sums = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, values)
    means = sums / counts
    sq = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, (values - means[inverse]) ** 2)
    var = torch.where(counts > 1, sq / (counts - 1).clamp(min=1), torch.zeros_like(sq))
    return means[inverse], var.sqrt()[inverse]


@ADVANTAGES.register("grpo")
def grpo(rewards: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor:
    """GRPO: A_i = (r_i - mean(group)) / (std(group) + eps); Dr.GRPO (cfg.std_normalize=False)
    skips the division.

    A group whose rewards are all equal (or of size 1) gets advantage 0 everywhere.
    """
    mean, std = group_stats(rewards, group_ids)
    adv = rewards.double() - mean
    if cfg.std_normalize:
        adv = adv / (std + EPS)
    return adv.float()
