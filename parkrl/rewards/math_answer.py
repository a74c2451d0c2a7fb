"""A reward for math answers: equivalence checked by math-verify (LaTeX, fractions, numbers)."""
from __future__ import annotations

import sys
import threading
from typing import Any

from parkrl.config import ConfigError
from parkrl.rewards.base import RewardFunction


def gold_text(answer: str) -> str:
    """The reference answer to compare with: a GSM8K solution's number after its last "####",
    else the answer as given."""
    return answer.rsplit("####", 1)[1].strip() if "####" in answer else answer.strip()


class MathVerifyReward(RewardFunction):
    """1.0 when the completion's final answer equals sample["answer"] mathematically, else 0.0.

    math-verify (Hugging Face) extracts the completion's answer, preferring a `\\boxed{...}`
    and else the expressions it finds in the text (for "The answer is 5. Then 6." that is 5, not
    the last number: ask for \\boxed{} in the system prompt, as recipe=gsm8k does), and compares it with the reference symbolically and
    numerically: `\\boxed{\\frac{1}{2}}` matches 0.5, `1,000` matches 1000, `$\\sqrt{4}$` matches 2.
    A GSM8K reference ("... #### 72", or just "72") counts its number after "####". A completion
    with no answer in it scores 0.0; a score of 1.0 counts as correct in eval/accuracy.

    `timeout_s` bounds parsing and each comparison (math-verify uses SIGALRM, so this holds in
    the main thread; where the reward runs in another thread, e.g. with rollout.one_step_off,
    math-verify runs without a timeout).
    """

    def __init__(self, timeout_s: int = 5) -> None:
        try:
            import math_verify  # noqa: F401 - here, so a missing package fails before any worker starts
        except ImportError:
            raise ConfigError("reward.cls=parkrl.rewards.MathVerifyReward needs the math-verify package: "
                              "pip install math-verify==0.9.0") from None
        if timeout_s < 0:
            raise ConfigError(f"reward.args.timeout_s={timeout_s}: must be >= 0 (0 = no timeout)")
        self.timeout_s = timeout_s
        self._gold: dict[str, Any] = {}

    def __call__(self, completions: list[str], messages: list[list[dict[str, str]]],
                 samples: list[dict[str, Any]]) -> list[float]:
        from math_verify import parse, verify

        timeout = self.timeout_s if threading.current_thread() is threading.main_thread() and self.timeout_s else None
        scores = []
        for text, sample in zip(completions, samples):
            gold = self._parse_gold(str(sample["answer"]), timeout)
            got = parse(text, parsing_timeout=timeout) if text.strip() else []
            ok = bool(gold) and bool(got) and verify(gold, got, timeout_seconds=timeout)
            scores.append(1.0 if ok else 0.0)
        return scores

    def _parse_gold(self, answer: str, timeout: int | None) -> Any:
        from math_verify import parse

        if answer not in self._gold:  # the eval set's references are parsed once
            text = gold_text(answer)
            parsed = parse(text, parsing_timeout=timeout)
            if not parsed and "$" not in text:  # bare LaTeX such as \frac{1}{2} or \pi
                parsed = parse(f"${text}$", parsing_timeout=timeout)
            if not parsed:
                print(f"[parkrl] warning: MathVerifyReward cannot parse the reference answer {answer[:80]!r}; every "
                      f"completion for it scores 0 (check data.answer_key)", file=sys.stderr, flush=True)
            self._gold[answer] = parsed
        return self._gold[answer]
