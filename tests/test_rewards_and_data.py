"""The built-in task reward, user rewards by import path, and the held-out split."""
import sys
from pathlib import Path

import pytest

from parkrl.config import ConfigError, DataConfig
from parkrl.data import TaskPrompts
from parkrl.rewards import ReasoningGymReward, RewardFunction, extract_answer, load_reward


def test_extract_answer():
    assert extract_answer("The answer is 12.") == "12"
    assert extract_answer("3 + 4 = 7") == "7"
    assert extract_answer("it is -5") == "-5"
    assert extract_answer("1,234 apples") == "1234"
    assert extract_answer("no digits here") is None
    assert extract_answer("  7 \n", mode="text") == "7"


def _sample(question_idx: int = 0):
    data = TaskPrompts(DataConfig(task="chain_sum", task_args={"min_terms": 2, "max_terms": 2, "min_digits": 1,
                                                             "max_digits": 1}, eval_size=5, train_size=50), 0)
    return data.eval[question_idx]


def test_reasoning_gym_reward_uses_task_scorer():
    s = _sample()
    reward = ReasoningGymReward()
    right, wrong = f"The final answer is {s['answer']}.", f"The final answer is {int(s['answer']) + 1}."
    assert reward([right, wrong, "I don't know"], [s["messages"]] * 3, [s] * 3) == [1.0, 0.0, 0.0]


def test_user_reward_selected_by_import_path():
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        fn = load_reward("custom_reward.ShortText", {"max_chars": 4})
        assert isinstance(fn, RewardFunction)
        assert fn(["a1", "zzzzzz"], [[], []], [{}, {}]) == [0.5, 0.0]
    finally:
        sys.path.pop(0)


def test_bad_reward_paths_name_the_key():
    with pytest.raises(ConfigError, match="reward.cls='nowhere.Nothing'"):
        load_reward("nowhere.Nothing", {})
    with pytest.raises(ConfigError, match="not a subclass of parkrl.RewardFunction"):
        load_reward("collections.OrderedDict", {})
    with pytest.raises(ConfigError, match="reward.args"):
        load_reward("parkrl.rewards.ReasoningGymReward", {"bogus": 1})


def test_eval_set_is_disjoint_from_training_and_distinct():
    cfg = DataConfig(task="chain_sum", task_args={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                     eval_size=100, train_size=2000)
    data = TaskPrompts(cfg, shuffle_seed=0)
    eval_q = {s["question"] for s in data.eval}
    assert len(data.eval) == 100 and len(eval_q) == 100
    assert not eval_q & {s["question"] for s in data.train}
    assert data.excluded > 0  # the small 1-digit space does repeat across seeds
    drawn = [s["question"] for s in data.next_prompts(len(data.train) + 5)]
    assert not eval_q & set(drawn)
    assert data.eval[0]["messages"][0] == {"role": "system", "content": cfg.system_prompt}


def test_bad_task_names_the_key():
    with pytest.raises(ConfigError, match="data.task='no_such_task'"):
        TaskPrompts(DataConfig(task="no_such_task"), 0)


def test_examples_reward_loads_from_its_own_module():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        fn = load_reward("exact_answer_reward.ExactAnswerReward", {"partial": 0.25})
        s = {"answer": "7"}
        assert fn(["7", "The answer is 7.", "8"], [[]] * 3, [s] * 3) == [1.0, 0.25, 0.0]
    finally:
        sys.path.pop(0)


class LengthPenalty(RewardFunction):
    """A length penalty in tokens, as a user writes it: no tokenizer needed."""

    def __call__(self, completions, messages, samples):
        return [1.0 - s["num_response_tokens"] / 10 for s in samples]


def test_a_reward_function_gets_each_completions_token_count(tiny_model_dir):
    from parkrl.collect import score
    from parkrl.models import load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    ids = [tok.encode("one"), tok.encode("one two three four"), tok.encode("one two") + [tok.eos_token_id]]
    task = {"question": "q", "answer": "1", "messages": []}
    samples = [task, task, task]  # a group's samples share their task's dict
    values, errors = score(LengthPenalty(), tok, ids, samples)
    assert errors == 0 and values == [pytest.approx(1.0 - len(i) / 10) for i in ids]
    assert len(ids[1]) > len(ids[0]) and ids[2][-1] == tok.eos_token_id  # counts are tokens as sampled, EOS too
    assert set(task) == {"question", "answer", "messages"}  # the task's own dict is not changed

    seen = []

    class Spy(RewardFunction):
        def __call__(self, completions, messages, samples):
            seen.extend(samples)
            return [0.0] * len(completions)

    score(Spy(), tok, ids, samples)
    assert [s["response_ids"] for s in seen] == ids and [s["num_response_tokens"] for s in seen] == [len(i) for i in ids]
