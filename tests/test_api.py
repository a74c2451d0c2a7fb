"""`parkrl.run(...)`: the Python entry point, with a plain function as the reward and rows as objects."""
import json

import pytest

import parkrl
from parkrl.api import compose, data_file, describe
from parkrl.config import ConfigError
from parkrl.rewards import FunctionReward


def test_compose_checks_keys_like_the_command_line():
    cfg = compose("dapo", ["trainer.total_steps=3"])
    assert cfg.trainer.total_steps == 3 and cfg.algorithm.dynamic_sampling  # the recipe applied
    with pytest.raises(ConfigError, match="did you mean trainer.total_steps"):
        compose("grpo", ["trainer.total_step=3"])
    with pytest.raises(ConfigError, match="rollout.n"):
        compose("grpo", ["rollout.n=many"])


def test_rows_are_written_as_jsonl_and_bad_rows_named(tmp_path):
    rows = [{"question": "1 + 1?", "answer": "2"}, {"question": "2 + 2?", "answer": 4, "level": "easy"}]
    path = data_file(rows, tmp_path / "data" / "train.jsonl", "train_data")
    assert [json.loads(line) for line in open(path)] == rows
    assert data_file("some/file.parquet", tmp_path / "unused.jsonl", "train_data") == "some/file.parquet"
    with pytest.raises(ConfigError, match=r"train_data\[1\] is a str"):
        data_file([{"question": "a"}, "b"], tmp_path / "x.jsonl", "train_data")
    with pytest.raises(ConfigError, match="eval_data is empty"):
        data_file([], tmp_path / "y.jsonl", "eval_data")
    with pytest.raises(ConfigError, match="not a dict"):
        data_file({"question": "a"}, tmp_path / "z.jsonl", "eval_data")


def test_a_plain_function_is_a_reward_function():
    seen = []
    reward = FunctionReward(lambda completions, samples: seen.append(samples) or [len(c) for c in completions])
    assert reward(["ab", "abc"], [[], []], [{"answer": "1"}, {"answer": "2"}]) == [2, 3]
    assert seen == [[{"answer": "1"}, {"answer": "2"}]]
    assert reward.is_correct(1.0) and not reward.is_correct(0.5)
    with pytest.raises(TypeError, match="expected a function"):
        FunctionReward("not callable")


def test_the_reward_is_recorded_by_name_whatever_callable_it_is():
    import functools

    def scored(completions, samples, bonus=0.0):
        return [bonus] * len(completions)

    assert describe(scored).endswith("test_the_reward_is_recorded_by_name_whatever_callable_it_is.<locals>.scored")
    assert describe(functools.partial(scored, bonus=1.0)) == describe(scored)
    assert describe(FunctionReward(scored)) == "parkrl.rewards.base.FunctionReward"  # an instance: its class
    with pytest.raises(ConfigError, match="reward=FunctionReward is a class: pass an instance"):
        parkrl.run(reward=FunctionReward, overrides=["trainer.total_steps=1"])


@pytest.mark.integration
def test_run_with_a_lambda_reward_and_rows_on_ray(tiny_model_dir, tmp_path, ray_session):
    """2 steps through Ray, vLLM and the FSDP2 learner; the lambda (defined here, importable by
    no name) scores every completion in this process, and the rows are the run's data."""
    calls = []

    def reward(completions, samples):
        calls.append(len(completions))
        return [1.0 if s["answer"] in c else float(len(c) % 2) for c, s in zip(completions, samples)]

    train = [{"question": f"What is {k} plus {k}?", "answer": str(2 * k)} for k in range(10)]
    evals = [{"question": f"What is {k} times 3?", "answer": str(3 * k)} for k in range(4)]
    out = parkrl.run(recipe="grpo", reward=reward, train_data=train, eval_data=evals, overrides=[
        f"model.path={tiny_model_dir}", f"trainer.output_dir={tmp_path / 'run'}", "trainer.total_steps=2",
        "trainer.eval_every=2", "trainer.save_final=false", "trainer.prompts_per_step=2", "rollout.n=4",
        "rollout.max_new_tokens=8", "rollout.dtype=float32", "learner.dtype=float32", "rollout.kv_cache_gib=0.25",
        "resources.learner.cpus_per_worker=1", "resources.rollout.cpus_per_worker=1",
    ])
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert calls[:1] == [4] and sum(calls) == 4 + 2 * 8 + 4  # eval, 2 steps of 2 prompts x 4, eval
    assert all(0.0 <= r["reward/mean"] <= 1.0 for r in rows[1:])
    assert [json.loads(line) for line in open(out / "data" / "train.jsonl")] == train
    recorded = json.loads((out / "config.json").read_text())
    assert recorded["reward"]["cls"].endswith("test_run_with_a_lambda_reward_and_rows_on_ray.<locals>.reward")
    assert recorded["data"]["train_file"] == str(out / "data" / "train.jsonl")
