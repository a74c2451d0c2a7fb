"""Checkpoints and resume: exact continuation after SIGKILL, which checkpoint `resume` picks,
pruning to the last K, torn checkpoints, and the sampler's state."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parkrl.config import Config, ConfigError, DataConfig
from parkrl.data import TaskPrompts
from parkrl.runs import checkpoint

TESTS = Path(__file__).parent
# Compared between the uninterrupted and the resumed run: rollouts (rewards, lengths) and the
# update (loss, gradient norm, logprob agreement).
COMPARED = ["reward/mean", "reward/std", "response/length_mean", "loss/policy", "learner/grad_norm",
            "policy/entropy", "rollout/logprob_diff"]
TOLERANCE = 1e-6  # fp32 on CPU is deterministic; measured identical to the last digit


def cli(model_dir: str, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "parkrl.train", "recipe=grpo", f"model.path={model_dir}",
            "trainer.runtime=local", "rollout.backend=hf", "reward.cls=custom_reward.ShortText",
            "trainer.prompts_per_step=2", "rollout.n=4", "rollout.max_new_tokens=8", "learner.lr=1e-3",
            "learner.dtype=float32", "rollout.dtype=float32", "resources.learner.cpus_per_worker=1",
            "resources.rollout.cpus_per_worker=1", "data.eval_size=4", "data.train_size=50",
            "trainer.eval_every=0", "trainer.save_final=false", f"trainer.output_dir={out}", *extra]


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def rows(out: Path) -> dict[int, dict]:
    return {r["step"]: r for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())}


@pytest.mark.integration
def test_resume_after_sigkill_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    args = ("trainer.total_steps=6", "trainer.save_every=3")
    done = subprocess.run(cli(tiny_model_dir, run_a, *args), env=env(), cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]

    # Run B: SIGKILL as soon as step 3's checkpoint is complete (nothing gets to clean up).
    proc = subprocess.Popen(cli(tiny_model_dir, run_b, *args), env=env(), cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run_b / "checkpoints" / "step_000003" / checkpoint.STATE_FILE
    deadline = time.monotonic() + 300
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert marker.exists() and proc.returncode == -signal.SIGKILL
    assert not (run_b / "checkpoints" / "step_000006").exists(), "killed too late to test a resume"

    resumed = subprocess.run(cli(tiny_model_dir, run_b, *args), env=env(), cwd=tmp_path, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after step 3" in resumed.stdout
    log = (run_b / "train.log").read_text().splitlines()  # the killed attempt's lines, then the resumed one's
    assert log.index(next(line for line in log if line.startswith("step 3/6"))) < log.index(
        next(line for line in log if "resuming after step 3" in line))
    a, b = rows(run_a), rows(run_b)
    assert sorted(b) == [1, 2, 3, 4, 5, 6]  # rows the killed attempt logged after step 3 were replaced
    for step in (4, 5, 6):
        for key in COMPARED:
            assert b[step][key] == pytest.approx(a[step][key], abs=TOLERANCE, rel=TOLERANCE), (step, key)
    assert a[4]["loss/policy"] != a[5]["loss/policy"]  # the compared values do change step to step
    samples = [json.loads(line)["step"] for line in (run_b / "samples.jsonl").read_text().splitlines()]
    assert sorted(set(samples)) == [1, 2, 3, 4, 5, 6] and samples == sorted(samples)


class FakeFleet:
    """Stands in for the learner side of `checkpoint.save` (pure bookkeeping under test)."""

    def save_checkpoint(self, path: str) -> None:
        Path(path).mkdir(parents=True)
        (Path(path) / "shards").write_text("x")


def test_save_keeps_the_last_k_complete_checkpoints(tmp_path):
    cfg = Config()
    cfg.trainer.keep_checkpoints = 2
    for step in (1, 2, 3):
        checkpoint.save(FakeFleet(), tmp_path, step, {"cursor": step}, cfg)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_000002", "step_000003"]
    assert checkpoint.read_state(tmp_path / "checkpoints" / "step_000003")["data"] == {"cursor": 3}


def test_resume_picks_the_latest_complete_checkpoint_and_ignores_torn_ones(tmp_path):
    cfg = Config()
    assert checkpoint.resume_point("auto", tmp_path) is None  # nothing yet: a fresh start
    for step in (3, 6):
        checkpoint.save(FakeFleet(), tmp_path, step, {}, cfg)
    (tmp_path / "checkpoints" / "step_000009.tmp").mkdir()  # killed while saving
    (tmp_path / "checkpoints" / "step_000012").mkdir()  # no trainer_state.json: incomplete
    assert checkpoint.resume_point("auto", tmp_path).name == "step_000006"
    assert checkpoint.resume_point("never", tmp_path) is None
    explicit = tmp_path / "checkpoints" / "step_000003"
    assert checkpoint.resume_point(str(explicit), tmp_path) == explicit
    with pytest.raises(ConfigError, match=r"trainer.resume=.*step_000012.*not a complete parkrl checkpoint"):
        checkpoint.resume_point(str(tmp_path / "checkpoints" / "step_000012"), tmp_path)


def test_config_changes_name_keys_that_matter_and_ignore_run_length():
    saved = Config()
    now = Config()
    now.trainer.total_steps = 100
    now.learner.lr = 5e-6
    from dataclasses import asdict

    assert checkpoint.config_changes(asdict(saved), now) == ["learner.lr: 1e-05 -> 5e-06"]


def test_sampler_state_round_trip_continues_the_same_stream():
    cfg = DataConfig(task="chain_sum", task_args={"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1},
                     train_size=30, eval_size=5)
    a = TaskPrompts(cfg, shuffle_seed=0)
    a.next_prompts(25)
    state = json.loads(json.dumps(a.state_dict()))  # as stored in trainer_state.json
    expected = [s["question"] for s in a.next_prompts(40)]  # crosses a reshuffle
    b = TaskPrompts(cfg, shuffle_seed=123)  # a different seed: only the loaded state can match
    b.load_state_dict(state)
    assert [s["question"] for s in b.next_prompts(40)] == expected


def test_the_last_step_is_checkpointed_only_when_the_config_says_so():
    from parkrl.controller import checkpoint_due

    cfg = Config()
    cfg.trainer.total_steps, cfg.trainer.save_every = 5, 0
    assert [s for s in range(1, 6) if checkpoint_due(cfg, s, False)] == [5]  # save_final_checkpoint: on by default
    cfg.trainer.save_final_checkpoint = False
    assert [s for s in range(1, 6) if checkpoint_due(cfg, s, False)] == []
    assert checkpoint_due(cfg, 3, True)  # a stop request still saves
    cfg.trainer.save_every = 2
    assert [s for s in range(1, 6) if checkpoint_due(cfg, s, False)] == [2, 4]
    assert "trainer.save_final_checkpoint" in checkpoint._RESUMABLE_CHANGES  # a resume may turn it on or off


@pytest.mark.integration
def test_exit_0_done_without_a_final_checkpoint(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(cli(tiny_model_dir, out, "trainer.total_steps=1", "trainer.save_every=0",
                              "trainer.save_final_checkpoint=false"),
                          env=env(), cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(rows(out)) == [1] and "parkrl: error" not in done.stderr
    assert not (out / "checkpoints").exists() and "[parkrl] checkpoint" not in done.stdout


def test_a_fresh_run_refuses_an_output_dir_with_another_runs_checkpoints(tmp_path):
    checkpoint.save(FakeFleet(), tmp_path, 20, {}, Config())
    with pytest.raises(ConfigError, match=r"holds checkpoints after step 0 \(step_000020\).*trainer.resume=auto"):
        checkpoint.check_no_later_checkpoints(tmp_path, 0)  # trainer.resume=never
    checkpoint.check_no_later_checkpoints(tmp_path, 20)  # resuming it is fine


@pytest.mark.integration
@pytest.mark.parametrize("backend, zero_stage", [("fsdp2", 2), ("deepspeed", 3)])
def test_ppo_resume_on_two_learner_ranks_with_critic_and_epochs_is_exact(tiny_model_dir, tmp_path, ray_session,
                                                                          backend, zero_stage):
    """Sharded resume (2 FSDP2 or ZeRO-3 ranks) of everything PPO trains: policy, critic, both
    optimizers, the epoch shuffling counter; with a reference model and KL in the reward."""
    from test_integration import read_metrics, tiny_config

    from parkrl.controller import train

    def ppo(out, steps):
        cfg = tiny_config(tiny_model_dir, str(out), trainer__total_steps=steps, trainer__save_every=2,
                          trainer__eval_every=0, trainer__save_final=False, algorithm__advantage="gae",
                          algorithm__kl_coef=0.01, algorithm__kl_in="reward", algorithm__kl_estimator="k1",
                          learner__epochs=2, learner__mini_batches=2, learner__critic_lr=1e-3,
                          learner__backend=backend, learner__zero_stage=zero_stage)
        return cfg

    a = read_metrics(train(ppo(tmp_path / "a", 4)))
    train(ppo(tmp_path / "b", 2))
    b = read_metrics(train(ppo(tmp_path / "b", 4)))  # resumes from step 2 (a longer run of the same config)
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    keys = ["reward/mean", "loss/policy", "loss/value", "kl/ref", "learner/grad_norm", "critic/grad_norm",
            "policy/ratio_dev"]
    for i in (2, 3):
        for key in keys:
            assert b[i][key] == pytest.approx(a[i][key], abs=TOLERANCE, rel=TOLERANCE), (i + 1, key)
