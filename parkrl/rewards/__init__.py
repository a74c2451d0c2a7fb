"""Rewards: the `RewardFunction` interface and the built-in task rewards."""
from __future__ import annotations

from parkrl.plugins import instantiate, load_subclass
from parkrl.rewards.base import FunctionReward, RewardFunction
from parkrl.rewards.match import MatchAnswerReward
from parkrl.rewards.math_answer import MathVerifyReward
from parkrl.rewards.reasoning_gym import ReasoningGymReward, extract_answer


def load_reward(cls_path: str, args: dict) -> RewardFunction:
    """Instantiate the RewardFunction subclass at import path `cls_path` ("pkg.module.Class")."""
    return instantiate(load_subclass(cls_path, RewardFunction, "reward.cls"), args, "reward.args")


__all__ = ["FunctionReward", "MatchAnswerReward", "MathVerifyReward", "ReasoningGymReward", "RewardFunction", "extract_answer", "load_reward"]
