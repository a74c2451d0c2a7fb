"""The reward interface users subclass."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


class RewardFunction:
    """Scores a batch of completions; subclass it and name the class in `reward.cls`.

    Override `__call__`. It gets the completions' text, the prompts' chat messages and the
    task samples (each a dict with at least "question" and "answer", plus task metadata, and
    for this completion "response_ids", its token ids as sampled, and "num_response_tokens",
    their count), all of the same length, and returns one float per completion. `reward.args`
    from the config are passed to `__init__` as keyword arguments.

        class LengthPenalty(parkrl.RewardFunction):
            def __init__(self, max_tokens: int = 200):
                self.max_tokens = max_tokens

            def __call__(self, completions, messages, samples):
                return [1.0 - min(s["num_response_tokens"], self.max_tokens) / self.max_tokens for s in samples]
    """

    def __call__(self, completions: list[str], messages: list[list[dict[str, str]]],
                 samples: list[dict[str, Any]]) -> list[float]:
        raise NotImplementedError

    def is_correct(self, reward: float) -> bool:
        """Whether a reward counts as a correct answer (for `eval/accuracy`)."""
        return reward >= 1.0


class FunctionReward(RewardFunction):
    """A plain function `fn(completions, samples) -> list[float]` as a RewardFunction (what
    `parkrl.run(reward=fn)` wraps a function in); `is_correct` is reward >= 1.0."""

    def __init__(self, fn: Callable[[list[str], list[dict[str, Any]]], Sequence[float]]) -> None:
        if not callable(fn):
            raise TypeError(f"reward: expected a function (completions, samples) -> list[float] or a "
                            f"parkrl.RewardFunction, got {type(fn).__name__}")
        self.fn = fn

    def __call__(self, completions: list[str], messages: list[list[dict[str, str]]],
                 samples: list[dict[str, Any]]) -> list[float]:
        return list(self.fn(completions, samples))
