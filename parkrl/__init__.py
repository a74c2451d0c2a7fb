"""parkrl: RL post-training for LLMs with one controller, Ray workers, an FSDP2 learner and vLLM rollouts."""
from parkrl.config import Config, ConfigError
from parkrl.rewards import RewardFunction

__version__ = "0.1.0"
__all__ = ["Config", "ConfigError", "RewardFunction", "__version__"]
