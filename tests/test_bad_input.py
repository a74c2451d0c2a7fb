"""Bad input gets an error that names what to fix: dataset files (file and line), a reward
function that raises (fail fast, or score 0 and count), and NaN/inf losses (skip, then stop)."""
import json
import subprocess
import sys

import pytest

from parkrl.collect import score
from parkrl.data import DatasetError, read_samples
from parkrl.models import load_tokenizer
from parkrl.rewards import MatchAnswerReward, RewardFunction


def write(path, *lines: str):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_dataset_rows_become_chat_samples(tmp_path):
    f = write(tmp_path / "d.jsonl", json.dumps({"question": "2+3?", "answer": 5, "id": 7}), "",
              json.dumps({"messages": [{"role": "user", "content": "1+1?"}], "answer": "2"}))
    a, b = read_samples(f, "data.train_file", "Be brief.")
    assert a["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+3?"}]
    assert (a["answer"], a["id"]) == ("5", 7)  # answers are strings; extra fields are kept
    assert b["messages"] == [{"role": "user", "content": "1+1?"}] and b["question"] == "1+1?"


@pytest.mark.parametrize("lines, message", [
    (['{"question": "a", "answer": 1}', '{"question": "b", "answer": '], r"d\.jsonl:2: not valid JSON"),
    (['{"question": "a", "answer": 1}', "", '{"question": "b"}'], r"d\.jsonl:3: missing field \"answer\""),
    (['{"prompt": "a", "answer": 1}'], r"d\.jsonl:1: missing field \"question\".*fields present: \['answer', 'prompt'\]"),
    (['[1, 2]'], r"d\.jsonl:1: expected a JSON object, got list"),
    (['{"messages": "hi", "answer": 1}'], r"d\.jsonl:1: \"messages\" must be a non-empty list"),
])
def test_malformed_dataset_rows_name_the_file_and_line(tmp_path, lines, message):
    with pytest.raises(DatasetError, match=message):
        read_samples(write(tmp_path / "d.jsonl", *lines), "data.train_file", "")


def test_missing_dataset_file_names_the_key(tmp_path):
    with pytest.raises(DatasetError, match=r"data.eval_file='.*nope.jsonl': no such file"):
        read_samples(str(tmp_path / "nope.jsonl"), "data.eval_file", "")


def test_cli_dataset_error_exits_before_any_worker_starts(tmp_path):
    bad = write(tmp_path / "train.jsonl", '{"question": "1+1?", "answer": 2}', '{"question": "2+2?"}')
    ok = write(tmp_path / "eval.jsonl", '{"question": "3+3?", "answer": 6}')
    proc = subprocess.run(
        [sys.executable, "-m", "parkrl.train", f"data.train_file={bad}", f"data.eval_file={ok}",
         "reward.cls=parkrl.rewards.MatchAnswerReward", f"trainer.output_dir={tmp_path / 'out'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert f"{bad}:2: missing field \"answer\"" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "out" / "metrics.jsonl").exists()


def test_dataset_files_need_a_reward_that_reads_the_answer(tmp_path):
    from parkrl.config import Config, ConfigError, validate

    cfg = Config()
    cfg.data.train_file, cfg.data.eval_file = "t.jsonl", ""
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "data.train_file and data.eval_file: give both" in str(e.value)
    assert "reward.cls=parkrl.rewards.MatchAnswerReward" in str(e.value)


def test_match_answer_reward():
    r = MatchAnswerReward()
    samples = [{"answer": "42"}, {"answer": "#### 1,200"}, {"answer": "7"}, {"answer": "3"}]
    assert r(["It is 42.", "so 1200.0", "seven", "3 or 4"], [[]] * 4, samples) == [1.0, 1.0, 0.0, 0.0]
    assert MatchAnswerReward("text")([" yes "], [[]], [{"answer": "yes"}]) == [1.0]


class FailsOnSeven(RewardFunction):
    def __call__(self, completions, messages, samples):
        out = []
        for c in completions:
            if "7" in c:
                raise ZeroDivisionError("cannot score a seven")
            out.append(1.0)
        return out


@pytest.fixture(scope="module")
def tok(tiny_model_dir):
    return load_tokenizer(tiny_model_dir)


def test_raising_reward_fails_fast_naming_the_completion(tok):
    ids = [tok.encode("one"), tok.encode("it is 7")]
    samples = [{"question": "q1", "messages": []}, {"question": "q2", "messages": []}]
    with pytest.raises(RuntimeError, match=r"FailsOnSeven raised on completion 1 of 2 'it is 7' \(question 'q2'\).*"
                                           r"ZeroDivisionError.*reward.on_error=zero"):
        score(FailsOnSeven(), tok, ids, samples)


def test_raising_reward_scores_zero_and_counts_with_on_error_zero(tok):
    ids = [tok.encode("one"), tok.encode("it is 7"), tok.encode("two")]
    samples = [{"question": f"q{i}", "messages": []} for i in range(3)]
    assert score(FailsOnSeven(), tok, ids, samples, on_error="zero") == ([1.0, 0.0, 1.0], 1)


@pytest.mark.integration
def test_nan_loss_skips_updates_then_stops_the_run(tiny_model_dir, tmp_path):
    from parkrl.controller import train
    from test_integration import read_metrics, tiny_config

    train_file = write(tmp_path / "train.jsonl", *[json.dumps({"question": f"{i}+1?", "answer": i + 1}) for i in range(20)])
    eval_file = write(tmp_path / "eval.jsonl", *[json.dumps({"question": f"{i}+2?", "answer": i + 2}) for i in range(4)])
    cfg = tiny_config(tiny_model_dir, str(tmp_path / "run"), trainer__runtime="local", rollout__backend="hf",
                      trainer__total_steps=5, trainer__eval_every=0, trainer__max_nonfinite_steps=2,
                      algorithm__advantage="nan_advantage", data__train_file=train_file, data__eval_file=eval_file)
    cfg.resources.learner.num_workers = 1
    cfg.reward.cls = "parkrl.rewards.MatchAnswerReward"
    cfg.trainer.imports = ["custom_estimators"]
    with pytest.raises(RuntimeError, match=r"2 steps in a row had a NaN/inf loss \(trainer.max_nonfinite_steps=2\)"):
        train(cfg)
    rows = read_metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["learner/nonfinite_updates"] == 1 and r["loss/policy"] is None for r in rows)
    assert all(r["rollout/logprob_diff"] < 1e-3 for r in rows)  # weights untouched by the skipped updates


class BatchOnly(RewardFunction):
    """Raises on batches of more than one completion only (a batching bug)."""

    def __call__(self, completions, messages, samples):
        if len(completions) > 1:
            raise MemoryError("batch too big")
        return [0.5]


def test_on_error_zero_uses_single_scores_when_only_the_batch_call_fails(tok):
    ids = [tok.encode("one"), tok.encode("two")]
    samples = [{"question": "q", "messages": []}] * 2
    assert score(BatchOnly(), tok, ids, samples, on_error="zero") == ([0.5, 0.5], 0)
    with pytest.raises(RuntimeError, match="BatchOnly raised on a batch of 2: batch too big"):
        score(BatchOnly(), tok, ids, samples)
