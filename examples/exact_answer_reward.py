"""An example user reward, written as a user would: a module of your own, no change to parkrl.

Run it with:
    PYTHONPATH=examples python -m parkrl.train reward.cls=exact_answer_reward.ExactAnswerReward

It pays 1.0 only when the whole completion is the expected answer (no extra words), so it
trains the model to answer tersely; `partial` is paid when the answer is right but wordy.
"""
from parkrl import RewardFunction
from parkrl.rewards import extract_answer


class ExactAnswerReward(RewardFunction):
    def __init__(self, partial: float = 0.5) -> None:
        self.partial = partial

    def __call__(self, completions, messages, samples):
        rewards = []
        for text, sample in zip(completions, samples):
            expected = str(sample["answer"]).strip()
            if text.strip().rstrip(".") == expected:
                rewards.append(1.0)
            elif extract_answer(text) == expected:
                rewards.append(self.partial)
            else:
                rewards.append(0.0)
        return rewards
