"""Rewards: the `RewardFunction` interface and the built-in task rewards."""
from __future__ import annotations

import importlib

from parkrl.config import ConfigError

from parkrl.rewards.base import RewardFunction
from parkrl.rewards.match import MatchAnswerReward
from parkrl.rewards.reasoning_gym import ReasoningGymReward, extract_answer


def load_reward(cls_path: str, args: dict) -> RewardFunction:
    """Instantiate the RewardFunction subclass at import path `cls_path` ("pkg.module.Class")."""
    module_name, _, name = cls_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"reward.cls={cls_path!r}: cannot import it ({e}); give 'module.Class' on PYTHONPATH") from e
    if not (isinstance(cls, type) and issubclass(cls, RewardFunction)):
        raise ConfigError(f"reward.cls={cls_path!r} is not a subclass of parkrl.RewardFunction")
    try:
        return cls(**args)
    except TypeError as e:
        raise ConfigError(f"reward.args {dict(args)} do not fit {cls_path}: {e}") from e


__all__ = ["MatchAnswerReward", "ReasoningGymReward", "RewardFunction", "extract_answer", "load_reward"]
