"""The built-in task reward: reasoning-gym's own scorer on the completion's final answer."""
from __future__ import annotations

import re
from typing import Any

from parkrl.config import ConfigError
from parkrl.rewards.base import RewardFunction

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def extract_answer(completion: str, mode: str = "last_number") -> str | None:
    """The answer part of a completion: the last number in it ("last_number") or the whole
    stripped text ("text"); None when there is none."""
    if mode == "text":
        return completion.strip() or None
    numbers = _NUMBER.findall(completion.replace(",", ""))
    return numbers[-1] if numbers else None


class AnswerReward(RewardFunction):
    """Base of rewards that read an answer out of the completion (`reward.args.answer_format`)."""

    def __init__(self, answer_format: str = "last_number") -> None:
        if answer_format not in ("last_number", "text"):
            raise ConfigError(f"reward.args.answer_format={answer_format!r}: choose last_number or text")
        self.answer_format = answer_format


class ReasoningGymReward(AnswerReward):
    """Scores with the sample's reasoning-gym dataset (`score_answer`), 0 when no answer."""

    def __call__(self, completions: list[str], messages: list[list[dict[str, str]]],
                 samples: list[dict[str, Any]]) -> list[float]:
        import reasoning_gym

        scores = []
        for text, sample in zip(completions, samples):
            answer = extract_answer(text, self.answer_format)
            entry = sample["entry"]
            score = reasoning_gym.get_score_answer_fn(entry["metadata"]["source_dataset"])
            scores.append(float(score(answer, entry)) if answer is not None else 0.0)
        return scores
