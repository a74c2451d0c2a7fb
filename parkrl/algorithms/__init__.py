"""Pure tensor functions of the RL algorithms: no Ray, no models, no I/O."""
from parkrl.algorithms.advantages import ADVANTAGES, group_stats
from parkrl.algorithms.kl import KL_ESTIMATORS
from parkrl.algorithms.losses import (
    LOSS_AGGREGATIONS,
    POLICY_LOSSES,
    LossNorm,
    PolicyLossOutput,
    logprob_diff_sum,
    truncated_is_weights,
)
from parkrl.algorithms.registry import Registry


def registered_names() -> dict[str, tuple[str, ...]]:
    """Names currently registered per config key, for config validation ("group_advantage":
    the estimators that need `rollout.n >= 2`)."""
    return {
        "advantage": ADVANTAGES.names(),
        "group_advantage": ADVANTAGES.group_estimators(),
        "policy_loss": POLICY_LOSSES.names(),
        "loss_agg": LOSS_AGGREGATIONS.names(),
        "kl_estimator": KL_ESTIMATORS.names(),
    }


__all__ = [
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "LossNorm",
    "POLICY_LOSSES",
    "PolicyLossOutput",
    "Registry",
    "group_stats",
    "logprob_diff_sum",
    "registered_names",
    "truncated_is_weights",
]
