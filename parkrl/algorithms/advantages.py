"""Advantage estimators, registered under `algorithm.advantage` names, each of one of two levels:

- "outcome" (the default): `fn(rewards [N], group_ids [N], cfg: AlgorithmConfig) -> advantages [N]`,
  one per sample, broadcast to its tokens; samples drawn from the same prompt share a group id.
- "token": `fn(token_rewards [B, T], values [B, T], mask [B, T], cfg) -> (advantages, returns)`,
  per token, with the critic's state values; choosing one builds a critic (PPO's GAE).

Register your own with `@ADVANTAGES.register("name")` (outcome) or
`@ADVANTAGES.register("name", level="token")` and select it with `algorithm.advantage=name`.
The level is declared there once; `ADVANTAGES.level(name)` and `ADVANTAGES.uses_critic(name)`
are what the controller and the learner ask.

An estimator that compares each sample with the other samples of its prompt (a group of
`rollout.n`) declares `needs_groups=True`: with one sample per prompt it gives every sample
advantage 0, so nothing would train, and the config check rejects `rollout.n=1` for it
(GRPO, Dr.GRPO, RLOO and REINFORCE++ with baseline do; REINFORCE++ and GAE do not).
"""
from __future__ import annotations

from typing import Callable, TypeVar

import torch

from parkrl.algorithms.registry import Registry
from parkrl.config import AlgorithmConfig

F = TypeVar("F", bound=Callable)
LEVELS = ("outcome", "token")


class EstimatorRegistry(Registry):
    """A Registry whose entries also declare their level ("outcome" or "token") and whether they
    need groups of samples per prompt."""

    def __init__(self, kind: str, config_key: str) -> None:
        super().__init__(kind, config_key, traits={"level": "outcome", "needs_groups": False})

    def register(self, name: str, level: str = "outcome", needs_groups: bool = False) -> Callable[[F], F]:
        """Decorator that registers an estimator under `name`, of level "outcome" (per sample)
        or "token" (per token, with the critic's values). `needs_groups=True`: its signal comes
        from comparing the samples of one prompt, so it needs `rollout.n >= 2` (checked)."""
        if level not in LEVELS:
            raise ValueError(f"advantage estimator {name!r}: level must be one of {LEVELS}, got {level!r}")
        return super().register(name, level=level, needs_groups=needs_groups)

    def level(self, name: str) -> str:
        """The estimator's level, "outcome" or "token"; an unknown name fails listing what is registered."""
        return self.trait(name, "level")

    def uses_critic(self, name: str) -> bool:
        """Token-level estimators take the critic's values: choosing one builds a critic."""
        return self.level(name) == "token"

    def needs_groups(self, name: str) -> bool:
        """Whether the estimator needs groups of >= 2 samples per prompt (`rollout.n >= 2`)."""
        return self.trait(name, "needs_groups")

    def group_estimators(self) -> tuple[str, ...]:
        """Names of the estimators registered with `needs_groups=True`."""
        return self.names_with("needs_groups")


ADVANTAGES = EstimatorRegistry("advantage estimator", "algorithm.advantage")

EPS = 1e-6


def group_stats(values: torch.Tensor, group_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample mean, unbiased std (0 for groups of size 1) and size of the sample's group."""
    _, inverse, counts = torch.unique(group_ids, return_inverse=True, return_counts=True)
    values = values.double()
    sums = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, values)
    means = sums / counts
    sq = torch.zeros(len(counts), dtype=values.dtype).index_add_(0, inverse, (values - means[inverse]) ** 2)
    var = torch.where(counts > 1, sq / (counts - 1).clamp(min=1), torch.zeros_like(sq))
    return means[inverse], var.sqrt()[inverse], counts[inverse]


@ADVANTAGES.register("grpo", needs_groups=True)
def grpo(rewards: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor:
    """GRPO: A_i = (r_i - mean(group)) / (std(group) + eps), unbiased std.

    A group whose rewards are all equal (or of size 1) gets advantage 0 everywhere.
    """
    mean, std, _ = group_stats(rewards, group_ids)
    return ((rewards.double() - mean) / (std + EPS)).float()


@ADVANTAGES.register("drgrpo", needs_groups=True)
def drgrpo(rewards: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor:
    """Dr.GRPO: A_i = r_i - mean(group), no division by the group std (which up-weights
    groups that are nearly all right or all wrong). Pair it with `seq-mean-token-sum-norm`."""
    mean, _, _ = group_stats(rewards, group_ids)
    return (rewards.double() - mean).float()


@ADVANTAGES.register("rloo", needs_groups=True)
def rloo(rewards: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor:
    """RLOO: A_i = r_i - mean_{j != i} r_j over the other samples of the group
    (= n/(n-1) * (r_i - mean(group))); 0 for groups of size 1."""
    mean, _, n = group_stats(rewards, group_ids)
    n = n.double()
    scale = torch.where(n > 1, n / (n - 1).clamp(min=1), torch.zeros_like(n))
    return (scale * (rewards.double() - mean)).float()


def masked_whiten(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(v - mean) / (std + eps) over the entries where `mask` is set (unbiased std), 0 elsewhere;
    all 0 with fewer than 2 such entries. Batch whitening of advantages (`algorithm.whiten_advantages`,
    REINFORCE++), over every trained token of the batch for per-token advantages."""
    on = mask.bool()
    n = int(on.sum())
    if n < 2:
        return torch.zeros_like(values)
    x = values.double()
    mean = x[on].mean()
    std = ((x[on] - mean) ** 2).sum().div(n - 1).sqrt()
    return torch.where(on, (x - mean) / (std + EPS), 0.0).to(values.dtype)


def _whiten(x: torch.Tensor) -> torch.Tensor:
    return masked_whiten(x, torch.ones_like(x, dtype=torch.bool))


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(rewards: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor:
    """REINFORCE++ (outcome reward, gamma = 1): the return of every token is the sample's
    reward; advantages are whitened over the whole batch, A_i = (r_i - mean_batch) / std_batch.
    No per-prompt baseline."""
    return _whiten(rewards.double()).float()


@ADVANTAGES.register("reinforce_pp_baseline", needs_groups=True)
def reinforce_pp_baseline(rewards: torch.Tensor, group_ids: torch.Tensor, cfg: AlgorithmConfig) -> torch.Tensor:
    """REINFORCE++ with baseline: subtract the group mean first, then whiten over the batch,
    A_i = whiten_batch(r_i - mean(group))."""
    mean, _, _ = group_stats(rewards, group_ids)
    return _whiten(rewards.double() - mean).float()


@ADVANTAGES.register("gae", level="token")
def gae(token_rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
        cfg: AlgorithmConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """GAE (PPO with a critic), per token on [B, T] tensors whose mask is 1 on a prefix (the
    caller compacts multi-turn responses to their trained tokens first):

        delta_t = r_t + gamma * V_{t+1} - V_t,   A_t = delta_t + gamma * lambda * A_{t+1},

    with V and A past the last trained token taken as 0. Returns (advantages, returns = A + V).
    The only built-in token-level estimator (registered with level="token").
    """
    gamma, lam = cfg.gamma, cfg.lam
    rewards, values, mask = token_rewards.double(), values.double(), mask.double()
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype)
    next_adv = torch.zeros_like(next_value)
    for t in reversed(range(rewards.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        adv[:, t] = (delta + gamma * lam * next_adv) * mask[:, t]
        next_value = values[:, t] * mask[:, t]
        next_adv = adv[:, t]
    return adv.float(), (adv + values * mask).float()
