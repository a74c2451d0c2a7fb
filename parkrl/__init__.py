"""parkrl: RL post-training for LLMs with one controller, Ray workers, an FSDP2 learner and vLLM rollouts."""
from parkrl.config import Config, ConfigError
from parkrl.envs import Environment, StepResult
from parkrl.rewards import RewardFunction
from parkrl.tools import Tool

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "Environment", "RewardFunction", "StepResult", "Tool", "__version__"]
