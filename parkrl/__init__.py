"""parkrl: RL post-training for LLMs with one controller, Ray workers, an FSDP2 learner and vLLM rollouts."""
from parkrl.config import Config, ConfigError
from parkrl.envs import Environment, StepResult
from parkrl.rewards import RewardFunction
from parkrl.tools import Tool

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "Environment", "RewardFunction", "StepResult", "Tool", "__version__", "run"]


def __getattr__(name: str):
    if name == "run":  # parkrl.run(...) (parkrl.api), imported on first use: it brings Hydra and the controller
        from parkrl.api import run

        return run
    raise AttributeError(f"module 'parkrl' has no attribute {name!r}")
