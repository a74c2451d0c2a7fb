"""Multi-turn rollouts: environments, the built-in tool environment, and the episode loop."""
from typing import Any, Callable

from parkrl.envs.base import Environment, StepResult
from parkrl.envs.runner import Episode, EpisodeLimits, run_episodes
from parkrl.envs.tool_env import ToolEnvironment
from parkrl.plugins import instantiate, load_subclass


def environment_factory(cls_path: str, args: dict[str, Any]) -> Callable[[], Environment]:
    """A function making one fresh `env.cls(**env.args)` per episode (checked once, here)."""
    cls = load_subclass(cls_path, Environment, "env.cls")
    instantiate(cls, dict(args), "env.args")
    return lambda: cls(**args)


__all__ = ["Environment", "Episode", "EpisodeLimits", "StepResult", "ToolEnvironment", "environment_factory",
           "run_episodes"]
