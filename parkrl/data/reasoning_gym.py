"""Samples from a reasoning-gym task generator (offline, seeded)."""
from __future__ import annotations

from typing import Any

from parkrl.config import ConfigError


def task_samples(task: str, task_args: dict, seed: int, size: int, system_prompt: str) -> list[dict[str, Any]]:
    """`size` samples {"question", "answer", "entry", "messages"} of reasoning-gym task `task`."""
    import reasoning_gym

    try:
        ds = reasoning_gym.create_dataset(task, size=size, seed=seed, **task_args)
    except Exception as e:  # reasoning-gym raises several types for bad names/arguments
        raise ConfigError(f"data.task={task!r} with data.task_args={task_args}: {e}") from e
    out = []
    for i in range(size):
        entry = ds[i]
        messages = [{"role": "user", "content": entry["question"]}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        out.append({"question": entry["question"], "answer": entry["answer"], "entry": entry, "messages": messages})
    return out
