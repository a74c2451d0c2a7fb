"""A user's own reward, in the user's own module (selected by `reward.cls=custom_reward.DigitShare`)."""
from parkrl import RewardFunction


class DigitShare(RewardFunction):
    """Share of the completion's characters that are digits, times `scale`."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def __call__(self, completions, messages, samples):
        return [self.scale * sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]
