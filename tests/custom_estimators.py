"""A user's own advantage estimator (the docs' example), registered by `trainer.imports`."""
import torch

from parkrl.algorithms import ADVANTAGES


@ADVANTAGES.register("median_baseline", needs_groups=True)
def median_baseline(rewards: torch.Tensor, group_ids: torch.Tensor, cfg) -> torch.Tensor:
    """Reward minus the group's median."""
    out = torch.empty_like(rewards)
    for g in group_ids.unique():
        sel = group_ids == g
        out[sel] = rewards[sel] - rewards[sel].median()
    return out


@ADVANTAGES.register("nan_advantage")
def nan_advantage(rewards: torch.Tensor, group_ids: torch.Tensor, cfg) -> torch.Tensor:
    """A broken estimator (for the NaN-loss tests): every advantage is NaN."""
    return torch.full_like(rewards, float("nan"))
