"""Prompt sources: reasoning-gym tasks, or your own JSONL/Parquet/CSV/Arrow files."""
from parkrl.data.files import DatasetError, read_samples
from parkrl.data.prompts import TaskPrompts, check_prompt_lengths

__all__ = ["DatasetError", "TaskPrompts", "check_prompt_lengths", "read_samples"]
