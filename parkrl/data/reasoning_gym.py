"""Samples from a reasoning-gym task generator (offline, seeded)."""
from __future__ import annotations

from typing import Any

from parkrl.config import ConfigError
from parkrl.data.terminal_tasks import terminal_task_samples
from parkrl.sites.wiki.questions import wiki_task_samples

OWN_TASKS = {"terminal_files": terminal_task_samples, "wiki_questions": wiki_task_samples}


def task_samples(task: str, task_args: dict, seed: int, size: int, system_prompt: str) -> list[dict[str, Any]]:
    """`size` samples {"question", "answer", "entry", "messages"} of reasoning-gym task `task`, or of
    one of parkrl's own tasks (`terminal_files`: parkrl.data.terminal_tasks; `wiki_questions`:
    parkrl.sites.wiki.questions)."""
    if task in OWN_TASKS:
        try:
            return OWN_TASKS[task](seed, size, system_prompt, **task_args)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"data.task={task!r} with data.task_args={task_args}: {e}") from e
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
