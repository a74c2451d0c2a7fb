"""A task-agnostic reward for datasets with a reference answer (e.g. your own JSONL files)."""
from __future__ import annotations

from typing import Any

from parkrl.rewards.reasoning_gym import AnswerReward, extract_answer


class MatchAnswerReward(AnswerReward):
    """1.0 when the completion's answer equals sample["answer"], else 0.0.

    answer_format "last_number" compares the last number in the completion with the reference
    numerically (GSM8K style: "#### 42" or "42.0" match 42); "text" compares whole stripped texts.
    """

    def __call__(self, completions: list[str], messages: list[list[dict[str, str]]],
                 samples: list[dict[str, Any]]) -> list[float]:
        return [float(self._match(extract_answer(text, self.answer_format), str(s["answer"])))
                for text, s in zip(completions, samples)]

    def _match(self, got: str | None, expected: str) -> bool:
        if got is None:
            return False
        if self.answer_format == "text":
            return got == expected.strip()
        want = extract_answer(expected)
        try:
            return want is not None and float(got) == float(want)
        except ValueError:
            return False
