"""A user's own reward, in the user's own module (selected by `reward.cls=custom_reward.ShortText`).

It pays for short completions, which even a random-init model's outputs vary in, so GRPO
gets a signal in the tiny-model tests.
"""
from parkrl import RewardFunction


class ShortText(RewardFunction):
    """1 - len(text) / max_chars, floored at 0."""

    def __init__(self, max_chars: int = 100) -> None:
        self.max_chars = max_chars

    def __call__(self, completions, messages, samples):
        return [max(0.0, 1.0 - len(c) / self.max_chars) for c in completions]
