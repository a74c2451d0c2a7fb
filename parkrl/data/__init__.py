"""Prompt sources: reasoning-gym tasks or your own JSONL files."""
from parkrl.data.jsonl import DatasetError, read_samples
from parkrl.data.prompts import TaskPrompts

__all__ = ["DatasetError", "TaskPrompts", "read_samples"]
