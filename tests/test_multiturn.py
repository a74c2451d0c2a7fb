"""Multi-turn rollouts: tool-call parsing, the calculator, observation tokens from the chat
template, and the episode loop's token accounting, caps and scheduling (a scripted engine:
pure logic), then real episodes through training on the HF and vLLM engines."""
import threading
import time

import pytest

from parkrl.engines import Completion
from parkrl.envs import Environment, EpisodeLimits, StepResult, ToolEnvironment, run_episodes
from parkrl.envs.turns import TurnTokens
from parkrl.models import load_tokenizer
from parkrl.tools import Calculator, ToolCall, ToolCallError, find_tool_calls, run_tool_call


# ---- tools ---------------------------------------------------------------------------------------
def test_tool_calls_are_parsed_and_malformed_ones_explained():
    text = ('Let me compute. <tool_call>{"name": "calculator", "arguments": {"expression": "37*41"}}</tool_call>'
            '<tool_call>{"name": "calculator", "arguments": {"expression": </tool_call>'
            '<tool_call>{"arguments": {}}</tool_call><tool_call>{"name": "python", "arguments": [1]}</tool_call>'
            '<tool_call>{"name": "calculator"')
    calls = find_tool_calls(text)
    assert calls[0] == ToolCall("calculator", {"expression": "37*41"})
    assert [str(c) for c in calls[1:]] == [
        'the tool call is not valid JSON (Expecting value); write <tool_call>{"name": ..., "arguments": {...}}</tool_call>',
        'the tool call needs a "name" string', '"arguments" must be a JSON object',
        "the tool call is not closed with </tool_call>"]
    assert all(isinstance(c, ToolCallError) for c in calls[1:])
    assert find_tool_calls("The answer is 12.") == []


def test_tool_errors_become_observations():
    tools = {"calculator": Calculator()}
    assert run_tool_call(ToolCall("calculator", {"expression": "37*41"}), tools) == ("1517", True)
    assert run_tool_call(ToolCall("search", {}), tools) == ("error: unknown tool 'search'; available: calculator", False)
    assert run_tool_call(ToolCall("calculator", {"expr": "1"}), tools) == (
        "error: calculator takes ['expression']; missing ['expression']; unknown ['expr']", False)
    assert run_tool_call(ToolCall("calculator", {"expression": "1/0"}), tools) == (
        "error: ZeroDivisionError: division by zero", False)
    assert run_tool_call(ToolCallError("bad"), tools) == ("error: bad", False)


def test_calculator_evaluates_arithmetic_and_nothing_else():
    calc = Calculator()
    assert [calc(expression=e) for e in ("2+3*4", "(7-2)**2", "7/2", "sqrt(16)", "-3 % 5")] == ["14", "25", "3.5", "4", "2"]
    for bad in ("__import__('os').system('ls')", "open('x')", "[1,2]", "2**5000", "((((9**64)**64)**64)**64)**64",
                "(10**1000)*(10**1000)*(10**1000)*(10**1000)*(10**1000)"):
        with pytest.raises(ValueError):
            calc(expression=bad)


def test_bad_tool_call_reaches_the_model_as_an_observation():
    env = ToolEnvironment(tools=["calculator"])
    first = env.reset({"question": "What is 37 * 41?"})
    assert first[0]["role"] == "system" and '"name": "calculator"' in first[0]["content"] and first[1]["role"] == "user"
    r = env.step('<tool_call>{"name": "calculator", "arguments": {"expression": "37 *"}}</tool_call>')
    assert not r.done and r.observation[0]["role"] == "tool"
    assert r.observation[0]["content"].startswith("error: SyntaxError") and r.info == {"tool_calls": 1, "tool_errors": 1}
    assert env.step("It is 1517.").done


# ---- observation tokens ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tok(smollm2_dir):
    return load_tokenizer(smollm2_dir)


def test_observation_tokens_follow_the_chat_template(tok):
    turns = TurnTokens(tok)
    obs = [{"role": "tool", "content": "1517"}]
    assert tok.decode(turns.observation_ids(obs, assistant_ended_with_eos=True)) == \
        "\n<|im_start|>tool\n1517<|im_end|>\n<|im_start|>assistant\n"
    # A turn cut at a stop string has no EOS yet: the template's closing comes first.
    assert tok.decode(turns.observation_ids(obs, assistant_ended_with_eos=False)) == \
        "<|im_end|>\n<|im_start|>tool\n1517<|im_end|>\n<|im_start|>assistant\n"


# ---- the episode loop, on a scripted engine ----------------------------------------------------------
class ScriptedEngine:
    """Answers request `i` (episode i) with the next scripted token list for that episode."""

    def __init__(self, script: dict[int, list[list[int]]]) -> None:
        self.script = {i: list(turns) for i, turns in script.items()}
        self.queue: list[tuple[str, list[int], object]] = []
        self.log: list[tuple[str, int]] = []  # (request id, prompt length) in submission order

    def submit(self, request_id, prompt_ids, spec):
        self.queue.append((request_id, prompt_ids, spec))
        self.log.append((request_id, len(prompt_ids)))

    def abort(self, request_ids):
        self.queue = [q for q in self.queue if q[0] not in request_ids]

    def poll(self):
        time.sleep(0.01)
        done = []
        for rid, _, spec in self.queue:
            ids = self.script[int(rid.split(":")[0])].pop(0)[: spec.max_new_tokens]
            done.append((rid, Completion(ids, [-0.5] * len(ids), "stop")))
        self.queue = []
        return done


class TwoTurns(Environment):
    """Observation after the first turn, done after the second; sleeps `delay` in step."""

    def __init__(self, delay: float = 0.0, never_done: bool = False) -> None:
        self.delay, self.never_done, self.turn = delay, never_done, 0

    def reset(self, sample):
        return [{"role": "user", "content": sample["question"]}]

    def step(self, text):
        time.sleep(self.delay)
        self.turn += 1
        done = self.turn >= 2 and not self.never_done
        return StepResult([] if done else [{"role": "user", "content": "go on"}], reward=0.25, done=done,
                          info={"tool_calls": 1})


def run(tok, engine, env_factory, n, **limits):
    from parkrl.engines import SamplingSpec
    from parkrl.models import chat_prompt_ids

    spec = SamplingSpec(n=1, max_new_tokens=16, temperature=1.0)
    return run_episodes(engine, env_factory, [{"question": f"q{i}"} for i in range(n)], spec, tok,
                        EpisodeLimits(**limits), lambda m: chat_prompt_ids(tok, m))


def test_tokens_are_appended_exactly_and_masks_mark_the_environment(tok):
    # "hel" + "lo" as the model sampled it: decoding and re-tokenising would give other ids (drift).
    first = tok.encode("hel", add_special_tokens=False) + tok.encode("lo", add_special_tokens=False) + [tok.eos_token_id]
    second = tok.encode(" 42", add_special_tokens=False) + [tok.eos_token_id]
    assert tok.encode(tok.decode(first), add_special_tokens=False) != first
    (ep,) = run(tok, ScriptedEngine({0: [first, second]}), TwoTurns, 1)
    obs = TurnTokens(tok).observation_ids([{"role": "user", "content": "go on"}], True)
    assert ep.response_ids == first + obs + second  # the sampled ids, never re-tokenised
    assert ep.loss_mask == [1] * len(first) + [0] * len(obs) + [1] * len(second)
    assert ep.logprobs == [-0.5] * len(first) + [0.0] * len(obs) + [-0.5] * len(second)
    assert (ep.final_ids, ep.turns, ep.finish_reason, ep.env_reward) == (second, 2, "done", 0.5)
    assert ep.info == {"tool_calls": 2.0}
    assert tok.decode(ep.prompt_ids + ep.response_ids).endswith("<|im_start|>user\ngo on<|im_end|>\n<|im_start|>assistant\n 42<|im_end|>")


def test_turn_and_token_caps_hold(tok):
    turn = tok.encode(" step", add_special_tokens=False) + [tok.eos_token_id]
    (ep,) = run(tok, ScriptedEngine({0: [turn] * 10}), lambda: TwoTurns(never_done=True), 1, max_turns=3)
    assert (ep.turns, ep.finish_reason, sum(ep.loss_mask)) == (3, "max_turns", 3 * len(turn))
    long_turn = tok.encode(" a b c d e f g h", add_special_tokens=False)
    (ep,) = run(tok, ScriptedEngine({0: [long_turn] * 10}), lambda: TwoTurns(never_done=True), 1,
                max_turns=10, max_total_tokens=30)
    assert ep.finish_reason == "max_tokens" and len(ep.response_ids) <= 30


def test_a_slow_environment_does_not_hold_up_other_episodes(tok):
    turn = tok.encode(" ok", add_special_tokens=False) + [tok.eos_token_id]
    slow = threading.Event()

    class SlowForEpisodeZero(TwoTurns):
        def __init__(self):
            super().__init__()
            self.slow = not slow.is_set()
            slow.set()

        def step(self, text):
            if self.slow:
                time.sleep(0.5)
            return super().step(text)

    engine = ScriptedEngine({0: [turn] * 2, 1: [turn] * 2, 2: [turn] * 2})
    t0 = time.monotonic()
    episodes = run(tok, engine, SlowForEpisodeZero, 3)
    order = [rid for rid, _ in engine.log]
    assert order.index("0:1") > max(order.index(f"{i}:1") for i in (1, 2))  # the others went on meanwhile
    assert all(ep.finish_reason == "done" for ep in episodes) and time.monotonic() - t0 < 2.0


def test_a_slow_reset_does_not_hold_up_other_episodes_and_a_hung_one_is_named(tok):
    """Resets run in the pool like steps (a remote environment's reset is an HTTP call)."""
    turn = tok.encode(" ok", add_special_tokens=False) + [tok.eos_token_id]
    made = []

    class SlowReset(TwoTurns):
        def __init__(self, delay: float = 0.5):
            super().__init__()
            self.first, self.delay = not made, delay
            made.append(self)

        def reset(self, sample):
            if self.first:
                time.sleep(self.delay)
            return super().reset(sample)

    engine = ScriptedEngine({i: [turn] * 2 for i in range(3)})
    episodes = run(tok, engine, SlowReset, 3)
    order = [rid for rid, _ in engine.log]
    assert order.index("0:0") > max(order.index(f"{i}:0") for i in (1, 2))  # the others started meanwhile
    assert all(ep.finish_reason == "done" for ep in episodes)
    made.clear()
    with pytest.raises(TimeoutError, match=r"SlowReset.reset of sample 0 did not return within env.step_timeout_s=0.3"):
        run(tok, ScriptedEngine({i: [turn] * 2 for i in range(2)}), lambda: SlowReset(2.0), 2, step_timeout_s=0.3)


class Hanging(TwoTurns):
    """Episode 0's step hangs (far past the step deadline) or raises; every instance records its close."""
    made: list["Hanging"] = []

    def __init__(self, fail: str = "hang"):
        super().__init__()
        self.index, self.fail, self.closed = len(Hanging.made), fail, 0
        Hanging.made.append(self)

    def step(self, text):
        if self.index == 0 and self.fail == "hang":
            time.sleep(3)
        if self.index == 0 and self.fail == "raise":
            raise KeyError("broken state")
        return super().step(text)

    def close(self):
        self.closed += 1


def test_a_hanging_environment_ends_only_its_episode_and_every_environment_is_closed(tok, capsys):
    turn = tok.encode(" ok", add_special_tokens=False) + [tok.eos_token_id]
    Hanging.made = []
    t0 = time.monotonic()
    episodes = run(tok, ScriptedEngine({i: [turn] * 2 for i in range(3)}), Hanging, 3, step_timeout_s=0.5)
    assert time.monotonic() - t0 < 2.5  # the deadline, not the 3 s hang
    assert [ep.finish_reason for ep in episodes] == ["env_timeout", "done", "done"]
    assert episodes[0].info == {"step_timeouts": 1.0} and episodes[1].info == {"tool_calls": 2.0}
    assert [e.closed for e in Hanging.made] == [1, 1, 1]
    assert "Hanging.step of sample 0 (turn 1) did not return within env.step_timeout_s=0.5" in capsys.readouterr().err


def test_a_raising_environment_stops_the_rollout_or_ends_its_episode_as_configured(tok):
    turn = tok.encode(" ok", add_special_tokens=False) + [tok.eos_token_id]
    Hanging.made = []
    with pytest.raises(RuntimeError, match=r"Hanging.step of sample 0 \(turn 1\) raised KeyError.*env.on_error=end_episode"):
        run(tok, ScriptedEngine({i: [turn] * 2 for i in range(2)}), lambda: Hanging("raise"), 2)
    assert [e.closed for e in Hanging.made] == [1, 1]  # closed on the error too
    Hanging.made = []
    episodes = run(tok, ScriptedEngine({i: [turn] * 2 for i in range(2)}), lambda: Hanging("raise"), 2,
                   on_error="end_episode")
    assert [ep.finish_reason for ep in episodes] == ["env_error", "done"] and episodes[0].info == {"step_errors": 1.0}
    assert [e.closed for e in Hanging.made] == [1, 1]


# ---- real episodes through training ------------------------------------------------------------------
@pytest.mark.integration
@pytest.mark.parametrize("runtime, backend", [("local", "hf"), ("ray", "vllm")])
def test_multiturn_training_step_keeps_engine_and_learner_logprobs_aligned(tiny_model_dir, tmp_path, runtime, backend,
                                                                           request):
    from test_integration import SYNC_OK, read_metrics, tiny_config

    from parkrl.controller import train

    if runtime == "ray":
        request.getfixturevalue("ray_session")
    cfg = tiny_config(tiny_model_dir, str(tmp_path / "run"), trainer__runtime=runtime, rollout__backend=backend,
                      trainer__total_steps=2, trainer__eval_every=2, trainer__save_final=False,
                      env__cls="custom_env.AskTwice", env__max_total_tokens=64)
    cfg.resources.learner.num_workers = 1
    rows = read_metrics(train(cfg))
    assert [r["step"] for r in rows] == [0, 1, 2]
    for r in rows[1:]:
        assert r["env/turns_mean"] == 2.0 and r["env/tool_call_rate"] == 1.0
        assert 0 < r["env/env_token_frac"] < 1
        # Later turns' tokens are conditioned on environment tokens: the engine's and the
        # learner's logprobs of them still agree, so the appended ids are what both saw.
        assert r["rollout/logprob_diff"] < SYNC_OK
    assert rows[0]["eval/turns_mean"] == 2.0


def test_tag_format_calls_take_the_single_argument_or_a_json_object():
    from parkrl.tools import PythonTool, stop_strings

    tools = {"calculator": Calculator(), "python": PythonTool()}
    text = "<calculator>98 * 93</calculator> <python>{\"code\": \"print(1)\"}</python> <calculator>1+"
    calls = find_tool_calls(text, "tag", tools)
    assert calls[:2] == [ToolCall("calculator", {"expression": "98 * 93"}), ToolCall("python", {"code": "print(1)"})]
    assert str(calls[2]) == "the calculator call is not closed with </calculator>"
    assert stop_strings("tag", list(tools.values())) == ("</calculator>", "</python>")
    env = ToolEnvironment(call_format="tag", examples=[{"role": "user", "content": "demo"}])
    first = env.reset({"question": "What is 98 * 93?"})
    assert "<calculator>expression</calculator>" in first[0]["content"] and first[1]["content"] == "demo"
    r = env.step("<calculator>98 * 93</calculator>")
    assert r.observation == [{"role": "tool", "content": "9114"}]
    assert r.info == {"tool_calls": 1, "tool_errors": 0}
    assert env.uses_sandbox  # the python tool runs in the sandbox service
    assert not ToolEnvironment(tools=["calculator"]).uses_sandbox


@pytest.mark.integration
def test_example_environment_runs_from_the_config_alone(tiny_model_dir, tmp_path):
    import json
    import os
    import subprocess
    import sys

    from conftest import repo_root

    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(repo_root() / "examples"), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "parkrl.train", f"model.path={tiny_model_dir}", "trainer.runtime=local",
           "rollout.backend=hf", "env.cls=retry_env.RetryWithFeedback", "env.final_reward=false", "env.max_turns=3",
           "+env.args.max_tries=3", "trainer.total_steps=1", "trainer.eval_every=0", "trainer.prompts_per_step=2",
           "rollout.n=2", "rollout.max_new_tokens=6", "learner.dtype=float32", "rollout.dtype=float32",
           "data.eval_size=4", "data.train_size=50", "trainer.save_final=false", f"trainer.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    row = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert row["step"] == 1 and row["env/turns_mean"] == 3.0  # a random model never answers right: 3 tries each
    assert row["reward/mean"] == 0.0
