"""The environment interface for multi-turn rollouts (gym-like)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class StepResult:
    """What the environment answers to one assistant turn.

    observation: chat messages appended before the next assistant turn (e.g. a "tool" or
                 "user" message); ignored when `done`
    reward:      this turn's reward; an episode's reward is the sum of its turns' rewards plus
                 the run's reward function on the final assistant turn (if `reward.cls` is set)
    """

    observation: list[dict[str, str]]
    reward: float = 0.0
    done: bool = False
    info: dict[str, Any] = field(default_factory=dict)


class Environment:
    """One episode's world. Subclass it and name the class in `env.cls` (args in `env.args`).

    A fresh instance serves each episode: `reset(sample)` gives the first chat messages for a
    task sample, then `step(assistant_text)` is called after every assistant turn until it
    returns done=True, or the turn/token caps (`env.max_turns`, `env.max_total_tokens`) end
    the episode. `step` may be slow (it runs in a thread pool; other episodes keep generating).

        class Guess(parkrl.Environment):
            def reset(self, sample):
                self.target = int(sample["answer"])
                return [{"role": "user", "content": "Guess my number (1-100)."}]

            def step(self, text):
                guess = int(parkrl.rewards.extract_answer(text) or 0)
                if guess == self.target:
                    return parkrl.StepResult([], reward=1.0, done=True)
                hint = "higher" if guess < self.target else "lower"
                return parkrl.StepResult([{"role": "user", "content": hint}])
    """

    stop: tuple[str, ...] = ()  # strings that end an assistant turn (kept in it), e.g. a tool call's closing tag
    uses_sandbox: bool = False  # True if it needs the sandbox service (checked before step 1)

    def reset(self, sample: dict[str, Any]) -> list[dict[str, str]]:
        raise NotImplementedError

    def step(self, assistant_text: str) -> StepResult:
        raise NotImplementedError

    def close(self) -> None:
        """Release what the episode holds (a sandbox session, a browser, a connection). Called
        once when the episode ends, also after an error, a timeout or an abort."""
