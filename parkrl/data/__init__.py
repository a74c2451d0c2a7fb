"""Prompt sources."""
from parkrl.data.reasoning_gym import TaskPrompts

__all__ = ["TaskPrompts"]
