"""The reward interface users subclass."""
from __future__ import annotations

from typing import Any


class RewardFunction:
    """Scores a batch of completions; subclass it and name the class in `reward.cls`.

    Override `__call__`. It gets the completions' text, the prompts' chat messages and the
    task samples (each a dict with at least "question" and "answer", plus task metadata), all
    of the same length, and returns one float per completion. `reward.args` from the config
    are passed to `__init__` as keyword arguments.

        class LengthPenalty(parkrl.RewardFunction):
            def __init__(self, max_chars: int = 200):
                self.max_chars = max_chars

            def __call__(self, completions, messages, samples):
                return [1.0 - min(len(c), self.max_chars) / self.max_chars for c in completions]
    """

    def __call__(self, completions: list[str], messages: list[list[dict[str, str]]],
                 samples: list[dict[str, Any]]) -> list[float]:
        raise NotImplementedError

    def is_correct(self, reward: float) -> bool:
        """Whether a reward counts as a correct answer (for `eval/accuracy`)."""
        return reward >= 1.0
