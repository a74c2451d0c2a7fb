"""Pure tensor functions of the RL algorithms: no Ray, no models, no I/O."""
from parkrl.algorithms.advantages import ADVANTAGES, group_stats, masked_whiten
from parkrl.algorithms.correction import MODES, Correction, resolve_mode, rollout_correction, rollout_kl
from parkrl.algorithms.kl import KL_ESTIMATORS
from parkrl.algorithms.losses import LOSS_AGGREGATIONS, POLICY_LOSSES, LossNorm, PolicyLossOutput, logprob_diff_sum
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
    "Correction",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "LossNorm",
    "MODES",
    "POLICY_LOSSES",
    "PolicyLossOutput",
    "Registry",
    "group_stats",
    "masked_whiten",
    "logprob_diff_sum",
    "registered_names",
    "resolve_mode",
    "rollout_correction",
    "rollout_kl",
]
