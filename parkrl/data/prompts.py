"""The prompt stream of a run: a shuffled training sampler and a disjoint held-out eval set."""
from __future__ import annotations

import random
from typing import Any

from parkrl.config import ConfigError, DataConfig
from parkrl.data.jsonl import read_samples
from parkrl.data.reasoning_gym import task_samples


class TaskPrompts:
    """Training and eval samples from `data.train_file`/`data.eval_file` when set, else from
    the reasoning-gym task `data.task` (train from `data.train_seed`, eval from `data.eval_seed`).

    Held-out means disjoint: every eval question is removed from the training pool (small
    generator spaces repeat questions across seeds), and the eval set has no duplicates.
    """

    def __init__(self, cfg: DataConfig, shuffle_seed: int) -> None:
        if cfg.train_file:
            pool = read_samples(cfg.eval_file, "data.eval_file", cfg.system_prompt)
            train = read_samples(cfg.train_file, "data.train_file", cfg.system_prompt)
            source = f"data.train_file={cfg.train_file!r}"
        else:
            pool = task_samples(cfg.task, dict(cfg.task_args), cfg.eval_seed, cfg.eval_size * 4, cfg.system_prompt)
            train = task_samples(cfg.task, dict(cfg.task_args), cfg.train_seed, cfg.train_size, cfg.system_prompt)
            source = f"data.task={cfg.task!r}"
        seen: set[str] = set()
        self.eval: list[dict[str, Any]] = []
        for s in pool:
            if s["question"] not in seen and len(self.eval) < cfg.eval_size:
                seen.add(s["question"])
                self.eval.append(s)
        self.train = [s for s in train if s["question"] not in seen]
        self.excluded = len(train) - len(self.train)
        if not self.train:
            raise ConfigError(
                f"{source}: every training question is also an eval question; "
                f"use more training questions or lower data.eval_size"
            )
        self._rng = random.Random(shuffle_seed)
        self._order = list(range(len(self.train)))
        self._rng.shuffle(self._order)
        self._cursor = 0

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position (order, cursor, RNG), JSON-serialisable, for checkpoints."""
        version, internal, gauss = self._rng.getstate()
        return {"order": list(self._order), "cursor": self._cursor, "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` of a sampler over the same training pool."""
        if len(state["order"]) != len(self._order):
            raise ConfigError(
                f"the checkpoint's sampler covers {len(state['order'])} training questions, this run has "
                f"{len(self._order)}: data.* differs from the checkpointed run"
            )
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._order, self._cursor = list(state["order"]), int(state["cursor"])

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
