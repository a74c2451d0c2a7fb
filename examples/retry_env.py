"""An example environment, written as a user would: a module of your own, no change to parkrl.

The model answers a task question; a wrong answer gets "That is not right. Try again." and
another turn, up to `max_tries`. A right answer on try k pays 1 / k, so the model learns to be
right early but still gains from correcting itself. The rewards come from the environment, so
switch off the run's reward function on the final turn:

    PYTHONPATH=examples python -m parkrl.train env.cls=retry_env.RetryWithFeedback \\
        env.final_reward=false env.max_turns=3
"""
import parkrl
from parkrl.rewards import extract_answer


class RetryWithFeedback(parkrl.Environment):
    def __init__(self, max_tries: int = 3) -> None:
        self.max_tries = max_tries

    def reset(self, sample):
        self.answer, self.tries = str(sample["answer"]).strip(), 0
        return sample["messages"]  # the task's own prompt (system prompt + question)

    def step(self, assistant_text):
        self.tries += 1
        if extract_answer(assistant_text) == self.answer:
            return parkrl.StepResult([], reward=1.0 / self.tries, done=True, info={"solved": 1})
        if self.tries >= self.max_tries:
            return parkrl.StepResult([], reward=0.0, done=True)
        return parkrl.StepResult([{"role": "user", "content": "That is not right. Try again."}])
