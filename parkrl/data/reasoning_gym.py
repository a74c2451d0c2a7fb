"""Prompts from a reasoning-gym task: a training stream and a disjoint held-out eval set."""
from __future__ import annotations

import random
from typing import Any

from parkrl.config import ConfigError, DataConfig


def _samples(task: str, task_args: dict, seed: int, size: int, system_prompt: str) -> list[dict[str, Any]]:
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


class TaskPrompts:
    """Training prompts drawn from `data.train_seed`, eval prompts from `data.eval_seed`.

    Held-out means disjoint: every eval question is removed from the training pool (small
    generator spaces repeat questions across seeds), and the eval set has no duplicates.
    """

    def __init__(self, cfg: DataConfig, shuffle_seed: int) -> None:
        pool = _samples(cfg.task, dict(cfg.task_args), cfg.eval_seed, cfg.eval_size * 4, cfg.system_prompt)
        seen: set[str] = set()
        self.eval: list[dict[str, Any]] = []
        for s in pool:
            if s["question"] not in seen and len(self.eval) < cfg.eval_size:
                seen.add(s["question"])
                self.eval.append(s)
        train = _samples(cfg.task, dict(cfg.task_args), cfg.train_seed, cfg.train_size, cfg.system_prompt)
        self.train = [s for s in train if s["question"] not in seen]
        self.excluded = len(train) - len(self.train)
        if not self.train:
            raise ConfigError(
                f"data.task={cfg.task!r}: every training question is also an eval question; "
                f"widen data.task_args or lower data.eval_size"
            )
        self._rng = random.Random(shuffle_seed)
        self._order = list(range(len(self.train)))
        self._rng.shuffle(self._order)
        self._cursor = 0

    def next_prompts(self, k: int) -> list[dict[str, Any]]:
        """The next `k` training samples (the stream reshuffles after each pass)."""
        out = []
        for _ in range(k):
            if self._cursor == len(self._order):
                self._rng.shuffle(self._order)
                self._cursor = 0
            out.append(self.train[self._order[self._cursor]])
            self._cursor += 1
        return out
