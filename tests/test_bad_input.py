"""Bad input gets an error that names what to fix, before any worker starts: the config (an
unknown key, a `+key` no code reads, a wrong type), the model directory (not a model, truncated
weights), data files (file and line; prompts too long for the engine), the output directory
(logs whose checkpoints were deleted). Each CLI case checks the exit code, what is named, the
time to fail, and that no Ray temp dir, process or output file is left behind. Then: signals,
one test per exit code (docs/operating.md#exit-codes), a reward function that raises (fail
fast, or score 0 and count), and NaN/inf losses (skip, then stop)."""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import session_processes

from parkrl.collect import score
from parkrl.data import DatasetError, read_samples
from parkrl.models import load_tokenizer
from parkrl.rewards import MatchAnswerReward, RewardFunction

TESTS = Path(__file__).parent
FAST_S = 30.0  # a check before any worker starts: measured 0.5-13 s on a loaded 2-core box; Ray + engine start-up ~50 s


def write(path, *lines: str):
    path.write_text("\n".join(lines) + "\n")
    return str(path)


class Run:
    """A finished CLI run: its exit code, output, wall time, and what it left behind."""

    def __init__(self, proc: subprocess.Popen, stdout: str, stderr: str, wall_s: float, tmp: Path) -> None:
        self.code, self.stdout, self.stderr, self.wall_s, self.pid = proc.returncode, stdout, stderr, wall_s, proc.pid
        self.ray_dirs = sorted(p.name for p in tmp.glob("parkrl-ray-*"))
        deadline = time.monotonic() + 30  # Ray's daemons exit asynchronously after a shutdown
        while session_processes(self.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        self.left = session_processes(self.pid)

    @property
    def last_line(self) -> str:
        return (self.stderr.strip().splitlines() or [""])[-1]

    def assert_failed_cleanly(self, code: int, *named: str) -> None:
        """Exit `code`, a last line `parkrl: error: ...` naming each of `named`, and nothing left."""
        assert self.code == code, (self.code, self.stderr[-3000:])
        assert "parkrl: error: " in self.stderr, self.stderr[-3000:]
        for text in named:
            assert text in self.stderr, (text, self.stderr[-3000:])
        assert self.ray_dirs == [] and self.left == [], (self.ray_dirs, self.left)


def cli(tmp_path: Path, *args: str, timeout: float = 300, signal_when=None, sig=signal.SIGTERM) -> Run:
    """Run `python -m parkrl.train *args` in its own session (as a terminal job), with tests/ and
    tmp_path on PYTHONPATH and a private TMPDIR (where a Ray temp dir would appear). With
    `signal_when` (a callable), send `sig` to the process group once it returns true."""
    tmp = Path(tempfile.mkdtemp(prefix="pk", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "TMPDIR": str(tmp), "RAY_AUTH_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(TESTS), str(tmp_path), os.environ.get("PYTHONPATH", "")])}
    t0 = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "parkrl.train", *args], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        if signal_when is not None:
            deadline = time.monotonic() + timeout
            while proc.poll() is None and not signal_when(tmp) and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None:
                os.killpg(proc.pid, sig)
        stdout, stderr = proc.communicate(timeout=timeout)
        wall = time.monotonic() - t0
        return Run(proc, stdout, stderr, wall, tmp)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def tiny_run(model_dir: str, out: Path, *extra: str) -> list[str]:
    """A one-process run of the tiny model (no Ray, HF generate), one short step."""
    return [f"model.path={model_dir}", "trainer.runtime=local", "rollout.backend=hf", "trainer.total_steps=1",
            "trainer.eval_every=0", "trainer.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=4",
            "learner.dtype=float32", "rollout.dtype=float32", "resources.learner.cpus_per_worker=1",
            "resources.rollout.cpus_per_worker=1", "data.eval_size=4", "data.train_size=50",
            "reward.cls=custom_reward.ShortText", "trainer.save_final=false", f"trainer.output_dir={out}", *extra]


# ---- the config ---------------------------------------------------------------------------------
@pytest.mark.parametrize("override, named", [
    ("+trainer.totl_steps=3", ["trainer.totl_steps: no such config key", "did you mean trainer.total_steps?"]),
    ("trainer.totl_steps=3", ["trainer.totl_steps: no such config key", "did you mean trainer.total_steps?"]),
    ("+foo.bar=1", ["foo: no such config key"]),
    ("trainer.total_steps=abc", ["trainer.total_steps: Value 'abc'", "Integer"]),
])
def test_cli_config_errors_exit_2_naming_the_key(tmp_path, override, named):
    out = tmp_path / "out"
    run = cli(tmp_path, override, f"trainer.output_dir={out}")
    run.assert_failed_cleanly(2, *named)
    assert "Traceback" not in run.stderr and "+trainer.totl_steps" not in run.stderr  # no hint to add it with '+'
    assert run.last_line.startswith("parkrl: error: ") and run.wall_s < FAST_S
    assert not out.exists()


# ---- the model directory ------------------------------------------------------------------------
def test_cli_a_directory_that_is_not_a_model_exits_2_naming_what_is_missing(tmp_path):
    model = tmp_path / "notamodel"
    model.mkdir()
    (model / "readme.txt").write_text("not a model")
    out = tmp_path / "out"
    run = cli(tmp_path, f"model.path={model}", f"trainer.output_dir={out}")
    run.assert_failed_cleanly(2, f"model.path='{model}' is not a model directory", "no config.json", "readme.txt")
    assert "sentencepiece" not in run.stderr and "Traceback" not in run.stderr
    assert run.wall_s < FAST_S and not out.exists()


def test_cli_truncated_safetensors_exits_2_naming_the_file(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    weights = model / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    out = tmp_path / "out"
    run = cli(tmp_path, f"model.path={model}", f"trainer.output_dir={out}")
    run.assert_failed_cleanly(2, f"{weights} is truncated", "download or save it again")
    assert "Traceback" not in run.stderr and run.wall_s < FAST_S and not out.exists()


def test_model_dir_check_names_each_missing_part(tmp_path, tiny_model_dir):
    from parkrl.config import ConfigError
    from parkrl.models.loading import check_model_dir

    assert check_model_dir(tiny_model_dir) == tiny_model_dir
    model = tmp_path / "m"
    shutil.copytree(tiny_model_dir, model)
    (model / "tokenizer.json").unlink()
    with pytest.raises(ConfigError, match=r"has no tokenizer: none of tokenizer.json or tokenizer.model"):
        check_model_dir(str(model), "model.path")
    shutil.copy(Path(tiny_model_dir) / "tokenizer.json", model)
    (model / "model.safetensors").write_bytes((20).to_bytes(8, "little") + b'{"a": broken json!!}')
    with pytest.raises(ConfigError, match=r"model.safetensors has a damaged safetensors header"):
        check_model_dir(str(model), "reward.models[0].path")
    (model / "model.safetensors").unlink()
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "model-00001-of-00002.safetensors"}}))
    with pytest.raises(ConfigError, match=r"lists 1 weight files, 1 missing: model-00001-of-00002.safetensors"):
        check_model_dir(str(model), "model.path")


# ---- data files ---------------------------------------------------------------------------------
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
    out = tmp_path / "out"
    run = cli(tmp_path, f"data.train_file={bad}", f"data.eval_file={ok}", "reward.cls=parkrl.rewards.MatchAnswerReward",
              f"trainer.output_dir={out}")
    run.assert_failed_cleanly(2, f"{bad}:2: missing field \"answer\"")
    assert "Traceback" not in run.stderr and run.wall_s < FAST_S and not out.exists()


def test_cli_prompt_too_long_for_the_engine_names_the_row_and_the_keys(tmp_path, tiny_model_dir):
    rows = [json.dumps({"question": "1+1?", "answer": 2}), json.dumps({"question": "two " * 300, "answer": 3})]
    train = write(tmp_path / "train.jsonl", *rows)
    out = tmp_path / "out"
    run = cli(tmp_path, f"model.path={tiny_model_dir}", f"data.train_file={train}", "trainer.eval_every=0",
              "reward.cls=parkrl.rewards.MatchAnswerReward", "rollout.max_model_len=256", f"trainer.output_dir={out}")
    run.assert_failed_cleanly(2, f"{train}:2: ", "prompt tokens", "rollout.max_new_tokens=32",
                              "rollout.max_model_len=256", "1 prompt(s) do not fit")
    assert f"{train}:1" not in run.stderr  # the short row fits
    assert "Traceback" not in run.stderr and run.wall_s < FAST_S and not out.exists()


def test_task_prompts_too_long_name_the_task_sample(tiny_model_dir):
    from parkrl.config import DataConfig
    from parkrl.data import TaskPrompts, check_prompt_lengths

    data = TaskPrompts(DataConfig(train_size=20, eval_size=4), shuffle_seed=0)
    tok = load_tokenizer(tiny_model_dir)
    check_prompt_lengths(data, tok, max_new_tokens=32, max_model_len=1024)  # they fit
    with pytest.raises(DatasetError, match=r"data.task='chain_sum' sample \d+ \(data.train_seed=1\): \d+ prompt tokens"
                                           r"(.|\n)*\.\.\. \d+ more"):
        check_prompt_lengths(data, tok, max_new_tokens=32, max_model_len=40)


def test_eval_file_is_optional_when_eval_is_off(tmp_path):
    from parkrl.config import Config, ConfigError, DataConfig, validate
    from parkrl.data import TaskPrompts

    train = write(tmp_path / "t.jsonl", json.dumps({"question": "1+1?", "answer": 2}))
    cfg = Config()
    cfg.data.train_file, cfg.reward.cls, cfg.trainer.eval_every = train, "parkrl.rewards.MatchAnswerReward", 0
    validate(cfg)
    data = TaskPrompts(DataConfig(train_file=train), shuffle_seed=0)
    assert (len(data.train), data.eval, data.train_where) == (1, [], [f"{train}:1"])
    cfg.trainer.eval_every = 5
    with pytest.raises(ConfigError, match=r"data.eval_file: trainer.eval_every=5 evaluates on a held-out file; give "
                                          r"data.eval_file, or set trainer.eval_every=0"):
        validate(cfg)


# ---- the output directory -----------------------------------------------------------------------
def test_cli_rerun_into_a_directory_whose_checkpoints_were_deleted_is_refused(tmp_path):
    out = tmp_path / "out"
    (out / "checkpoints").mkdir(parents=True)
    metrics = write(out / "metrics.jsonl", *[json.dumps({"step": s, "reward/mean": 0.5}) for s in range(4)])
    samples = write(out / "samples.jsonl", json.dumps({"step": 3, "completion": "x"}))
    before = {p: Path(p).read_text() for p in (metrics, samples)}
    run = cli(tmp_path, f"trainer.output_dir={out}")
    run.assert_failed_cleanly(2, f"trainer.output_dir='{out}' holds metrics.jsonl of an earlier run (steps 1-3)",
                              "no checkpoint to continue from", "a new trainer.output_dir", "trainer.resume=never")
    assert "Traceback" not in run.stderr and run.wall_s < FAST_S
    assert {p: Path(p).read_text() for p in before} == before  # the earlier run's logs are untouched
    assert {p.name for p in out.iterdir()} == {"checkpoints", "metrics.jsonl", "samples.jsonl"}  # nothing added


def test_logs_without_a_checkpoint_start_over_only_when_asked(tmp_path):
    from parkrl.config import ConfigError
    from parkrl.runs import checkpoint

    assert checkpoint.check_logs_have_a_checkpoint(tmp_path, 0, "auto") is False  # a fresh directory
    write(tmp_path / "metrics.jsonl", json.dumps({"step": 0}), '{"step": 1, "torn')
    assert checkpoint.check_logs_have_a_checkpoint(tmp_path, 0, "auto") is False  # no trained step was logged
    write(tmp_path / "metrics.jsonl", json.dumps({"step": 0}), json.dumps({"step": 1}), json.dumps({"step": 2}))
    with pytest.raises(ConfigError, match="steps 1-2"):
        checkpoint.check_logs_have_a_checkpoint(tmp_path, 0, "auto")
    assert checkpoint.check_logs_have_a_checkpoint(tmp_path, 0, "never") is True  # starts over, saying so
    assert checkpoint.check_logs_have_a_checkpoint(tmp_path, 2, "auto") is False  # resuming from step 2


def test_dataset_files_need_a_reward_that_reads_the_answer(tmp_path):
    from parkrl.config import Config, ConfigError, validate

    cfg = Config()
    cfg.data.train_file, cfg.data.eval_file = "t.jsonl", ""
    with pytest.raises(ConfigError) as e:
        validate(cfg)
    assert "data.eval_file: trainer.eval_every=5 evaluates on a held-out file" in str(e.value)
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
    from test_integration import read_metrics, tiny_config

    from parkrl.controller import train

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


# ---- signals ------------------------------------------------------------------------------------
def test_exit_130_sigterm_before_any_worker(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    run = cli(tmp_path, *tiny_run(tiny_model_dir, out), signal_when=lambda tmp: (out / ".hydra").exists(),
              sig=signal.SIGTERM, timeout=120)
    run.assert_failed_cleanly(130, "interrupted by SIGTERM")
    assert run.last_line.startswith("parkrl: error: interrupted by SIGTERM") and "Traceback" not in run.stderr
    assert not (out / "metrics.jsonl").exists() or not (out / "metrics.jsonl").read_text().strip()
    assert not (out / "checkpoints").exists()


@pytest.mark.integration
def test_exit_130_signal_during_ray_start_up_leaves_nothing(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    args = [a for a in tiny_run(tiny_model_dir, out) if a != "trainer.runtime=local"]
    run = cli(tmp_path, *args, signal_when=lambda tmp: any(tmp.glob("parkrl-ray-*/session_*")), sig=signal.SIGINT,
              timeout=180)
    run.assert_failed_cleanly(130, "interrupted by SIGINT", "every worker was shut down")  # no Ray dir, no process
    assert "Traceback" not in run.stderr
    assert not (out / "checkpoints").exists() and not (out / "metrics.jsonl").read_text().strip()


def test_stale_ray_temp_dirs_of_dead_runs_are_removed_and_only_those(tmp_path):
    from parkrl.workers.cluster import OWNER_FILE, _start_time, clean_stale_temp_dirs

    def make(name: str, owner: dict | None) -> Path:
        d = tmp_path / name
        (d / "session_x" / "logs").mkdir(parents=True)
        if owner is not None:
            (d / OWNER_FILE).write_text(json.dumps(owner))
        return d

    dead = subprocess.Popen(["true"])
    dead.wait()
    me = {"pid": os.getpid(), "start": _start_time(os.getpid())}
    gone = make("parkrl-ray-gone", {"pid": dead.pid, "start": "1"})
    reused = make("parkrl-ray-reused", {**me, "start": "0"})  # our pid, but another process's start time
    running = make("parkrl-ray-running", me)
    unmarked = make("parkrl-ray-unmarked", None)
    other = make("other-ray-dir", {"pid": dead.pid, "start": "1"})
    lingering = make("parkrl-ray-lingering", {"pid": dead.pid, "start": "1"})
    holder = subprocess.Popen(["sleep", "60"], cwd=lingering / "session_x" / "logs")  # like Ray's agents, a minute
    try:
        assert sorted(clean_stale_temp_dirs(str(tmp_path))) == [str(gone), str(reused)]
        assert running.exists() and unmarked.exists() and other.exists() and lingering.exists()
    finally:
        holder.kill()
        holder.wait()
    assert clean_stale_temp_dirs(str(tmp_path)) == [str(lingering)]  # once its processes are gone
    assert running.exists() and unmarked.exists() and other.exists()


# ---- exit codes (docs/operating.md#exit-codes) --------------------------------------------------
def test_exit_0_nothing_to_do(tmp_path):
    out = tmp_path / "out"
    state = out / "checkpoints" / "step_000003" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"step": 3}))
    run = cli(tmp_path, "trainer.total_steps=3", f"trainer.output_dir={out}")
    assert run.code == 0, run.stderr[-3000:]
    assert "already holds step 3 (trainer.total_steps=3): nothing to do" in run.stdout
    assert run.wall_s < FAST_S and run.ray_dirs == [] and run.left == []


def test_exit_1_a_bug_in_parkrl_prints_its_traceback(tmp_path):
    (tmp_path / "inject_bug.py").write_text(
        "import parkrl.controller\n\n"
        "def broken(*args, **kwargs):\n"
        "    raise ZeroDivisionError('an injected bug')\n\n"
        "parkrl.controller.TaskPrompts = broken\n")
    run = cli(tmp_path, "trainer.imports=[inject_bug]", f"trainer.output_dir={tmp_path / 'out'}")
    run.assert_failed_cleanly(1, "Traceback", "ZeroDivisionError: an injected bug", "a bug in parkrl")
    assert run.last_line == "parkrl: error: an injected bug"


@pytest.mark.integration
def test_exit_3_a_worker_timeout_says_run_again(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    run = cli(tmp_path, *tiny_run(tiny_model_dir, out, "trainer.worker_timeout_s=0.2", "trainer.sync_timeout_s=0.1"))
    run.assert_failed_cleanly(3, "__init__ did not finish within 0 s (trainer.worker_timeout_s)",
                              "The run stopped while starting the workers", "Running the same command again starts over")
    assert "Traceback" not in run.stderr and run.last_line.endswith("the worker may be hung or dead")


@pytest.mark.integration
def test_exit_4_a_raising_reward_names_the_fix_not_a_resume(tmp_path, tiny_model_dir):
    (tmp_path / "raising_reward.py").write_text(
        "from parkrl import RewardFunction\n\n"
        "class Raises(RewardFunction):\n"
        "    def __call__(self, completions, messages, samples):\n"
        "        return [len(c) / 0 for c in completions]\n")
    out = tmp_path / "out"
    args = [a if not a.startswith("reward.cls=") else "reward.cls=raising_reward.Raises" for a in tiny_run(tiny_model_dir, out)]
    run = cli(tmp_path, *args)
    run.assert_failed_cleanly(4, "reward function Raises raised on completion 0", "ZeroDivisionError",
                              "raising_reward.py", "set reward.on_error=zero")  # the user's own traceback
    assert "continues from it" not in run.stderr and "resume" not in run.stderr
    assert run.last_line.startswith("parkrl: error: reward function Raises raised")


def test_exit_4_a_reward_constructor_that_raises(tmp_path):
    (tmp_path / "bad_init.py").write_text(
        "from parkrl import RewardFunction\n\n"
        "class NeedsFile(RewardFunction):\n"
        "    def __init__(self):\n"
        "        open('/no/such/answers.txt')\n")
    run = cli(tmp_path, "reward.cls=bad_init.NeedsFile", "data.train_size=50", "data.eval_size=4",
              f"trainer.output_dir={tmp_path / 'out'}")
    run.assert_failed_cleanly(4, "reward.cls='bad_init.NeedsFile': the user code raised FileNotFoundError",
                              "/no/such/answers.txt")


def test_worker_failures_say_resume_only_when_a_rerun_gets_past_them(tmp_path):
    from parkrl.config import Config
    from parkrl.controller import _failure_hint
    from parkrl.runs.errors import exit_code
    from parkrl.workers.group import WorkerDied, WorkerError, WorkerTimeout

    cfg = Config()
    died = WorkerDied("learner[0].update: the worker died (RayActorError: killed)", "learner", 0)
    hung = WorkerTimeout("rollout[0].generate did not finish within 600 s (trainer.worker_timeout_s)")
    raised = WorkerError("rollout[0].run_episodes failed: RuntimeError: environment step of sample 3 (turn 1) raised")
    too_long = WorkerError("rollout[0].run_episodes failed: ValueError: sample 0: the first prompt has 2000 tokens, "
                           "rollout.max_model_len=1024")
    assert [exit_code(e) for e in (died, hung, raised, too_long)] == [3, 3, 4, 4]
    assert "Running the same command again starts over" in _failure_hint(died, cfg, tmp_path, "in step 1")
    write(tmp_path / "metrics.jsonl", json.dumps({"step": 1}))
    assert "trainer.resume=never" in _failure_hint(hung, cfg, tmp_path, "in step 2")  # logs without a checkpoint
    state = tmp_path / "checkpoints" / "step_000002" / "trainer_state.json"
    state.parent.mkdir(parents=True)
    state.write_text("{}")
    for error in (died, hung):
        hint = _failure_hint(error, cfg, tmp_path, "in step 3")
        assert "step_000002. Running the same command again continues from it" in hint
    cfg.env.cls = "my_env.Calculator"
    for error, fix in ((raised, "fix the environment (env.cls='my_env.Calculator'"),
                       (too_long, "shorten the prompts or raise rollout.max_model_len")):
        hint = _failure_hint(error, cfg, tmp_path, "in step 3")
        assert fix in hint and "a rerun as is would fail the same way" in hint
        assert "Running the same command again" not in hint and "step_000002" in hint
