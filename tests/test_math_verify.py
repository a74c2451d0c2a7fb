"""parkrl.rewards.MathVerifyReward: math answers compared for equivalence by math-verify."""
import threading

import pytest

from parkrl import RewardFunction
from parkrl.config import ConfigError
from parkrl.rewards import MathVerifyReward, load_reward
from parkrl.rewards.math_answer import gold_text


@pytest.fixture(scope="module")
def reward() -> MathVerifyReward:
    return MathVerifyReward()


def scores(reward: RewardFunction, pairs: list[tuple[str, str]]) -> list[float]:
    """The reward of each (completion, reference answer) pair."""
    return reward([c for c, _ in pairs], [[] for _ in pairs], [{"question": "q", "answer": a} for _, a in pairs])


EQUIVALENT = [
    (r"Half of it: $\boxed{\frac{1}{2}}$", "0.5"),
    (r"\boxed{0.5}", r"\frac{1}{2}"),
    ("She has 1,000 apples.", "1000"),
    (r"\boxed{1000}", "1,000"),
    ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72"),
    ("The answer is 72.", "#### 72"),
    (r"\boxed{72}", "72"),
    ("So 0.75 of the cake.", r"$\frac{3}{4}$"),
    (r"$\sqrt{4}$", "2"),
    ("It loses -3 degrees", "-3"),
    ("x = 5", "5"),
    (r"first 7, then \boxed{18} dollars", "18"),
]
NOT_EQUIVALENT = [
    (r"\boxed{\frac{1}{3}}", "0.5"),
    ("73", "#### 72"),
    ("72 is wrong; it is 70", "72"),
    ("-3", "3"),
    ("I do not know", "42"),
    ("", "42"),
    (r"\boxed{x + 1}", "2"),
]


def test_equivalent_answers_score_one(reward):
    assert scores(reward, EQUIVALENT) == [1.0] * len(EQUIVALENT)


def test_different_answers_score_zero(reward):
    assert scores(reward, NOT_EQUIVALENT) == [0.0] * len(NOT_EQUIVALENT)


def test_correct_means_a_full_score(reward):
    assert isinstance(reward, RewardFunction)
    assert reward.is_correct(1.0) and not reward.is_correct(0.0)


def test_gsm8k_gold_answers_are_the_number_after_the_marks():
    assert gold_text("Step one <<2*3=6>>6.\n#### 1,200") == "1,200"
    assert gold_text("  42 ") == "42"


def test_selected_by_import_path_with_its_args():
    fn = load_reward("parkrl.rewards.MathVerifyReward", {"timeout_s": 2})
    assert isinstance(fn, MathVerifyReward) and fn.timeout_s == 2
    with pytest.raises(ConfigError, match=r"reward.args.timeout_s=-1: must be >= 0"):
        MathVerifyReward(timeout_s=-1)


def test_scores_off_the_main_thread(reward):
    """With rollout.one_step_off the reward runs in a thread, where SIGALRM timeouts cannot."""
    got: list[float] = []
    thread = threading.Thread(target=lambda: got.extend(scores(reward, EQUIVALENT[:3] + NOT_EQUIVALENT[:2])))
    thread.start()
    thread.join(60)
    assert got == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_pickles_with_its_cache(reward):
    """A reward may be shipped to another process (Ray); the parsed references travel along."""
    import pickle

    scores(reward, EQUIVALENT[:2])
    copy = pickle.loads(pickle.dumps(reward))
    assert scores(copy, EQUIVALENT[:2] + NOT_EQUIVALENT[:1]) == [1.0, 1.0, 0.0]
