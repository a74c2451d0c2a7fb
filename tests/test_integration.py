"""End to end on a tiny random-init Llama (SmolLM2 tokenizer): Ray actors, 2 FSDP2 ranks, a real
vLLM engine and the gloo weight broadcast; plus the in-process runtime with the HF engine.

Sync threshold: learner and engine both compute in fp32 here, so after a correct sync their
logprobs of the same tokens differ only by kernel rounding (measured ~1e-6 on SmolLM2 and on
this model). 1e-3 leaves a wide margin for other CPUs yet sits orders of magnitude below the
negative control: skipping one sync after an lr=1e-3 update moves logprobs by > 0.05.
"""
import json

import pytest
import torch

from parkrl.algorithms import ADVANTAGES
from parkrl.collect import generate_single_turn, score
from parkrl.config import Config
from parkrl.controller import train
from parkrl.data import TaskPrompts
from parkrl.engines import SamplingSpec
from parkrl.models import load_tokenizer
from parkrl.rewards import load_reward
from parkrl.step import logprob_diff

pytestmark = pytest.mark.integration
SYNC_OK = 1e-3
CONTRACT = ["step", "reward/mean", "loss/policy", "rollout/logprob_diff", "response/length_mean",
            "timing/step_s", "timing/generate_s", "timing/update_s", "timing/sync_s"]


def tiny_config(model_dir: str, out_dir: str, **changes) -> Config:
    cfg = Config()
    cfg.model.path = model_dir
    cfg.data.task_args = {"min_terms": 2, "max_terms": 2, "min_digits": 1, "max_digits": 1}
    cfg.data.eval_size, cfg.data.train_size = 8, 200
    cfg.reward.cls = "custom_reward.ShortText"  # varied rewards even from a random model
    cfg.rollout.n, cfg.rollout.max_new_tokens, cfg.rollout.dtype = 4, 12, "float32"
    cfg.rollout.kv_cache_gib = 0.25
    cfg.learner.dtype, cfg.learner.lr, cfg.learner.micro_batch_size = "float32", 1e-3, 4
    cfg.trainer.prompts_per_step, cfg.trainer.total_steps, cfg.trainer.eval_every = 4, 3, 3
    cfg.trainer.output_dir, cfg.trainer.worker_timeout_s, cfg.trainer.sync_timeout_s = out_dir, 300, 120
    cfg.resources.learner.num_workers = 2
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        setattr(getattr(cfg, section), key, value)
    return cfg


def read_metrics(out_dir) -> list[dict]:
    return [json.loads(line) for line in open(f"{out_dir}/metrics.jsonl")]


def test_ray_fsdp2_vllm_run(tiny_model_dir, tmp_path, ray_session):
    # A user-registered estimator, imported by the controller and by every Ray worker.
    cfg = tiny_config(tiny_model_dir, str(tmp_path / "run"), algorithm__advantage="median_baseline")
    cfg.trainer.imports = ["custom_estimators"]
    out = train(cfg)
    rows = read_metrics(out)
    assert [r["step"] for r in rows] == [0, 1, 2, 3]
    assert "eval/accuracy" in rows[0] and "eval/accuracy" in rows[-1]
    for r in rows[1:]:
        assert set(CONTRACT) <= set(r)
        assert 0.0 <= r["reward/mean"] <= 1.0
        assert 0 < r["response/length_mean"] <= 12
        assert r["rollout/logprob_diff"] < SYNC_OK  # every step after the first follows a sync
        assert 0 <= r["rollout/kl"] < SYNC_OK ** 2  # k3 ~ diff^2 / 2
        assert "rollout/is_weight_mean" not in r  # both sides fp32, on-policy: rollout_correction=auto is off
        assert r["learner/grad_norm"] > 0 and r["memory/learner_peak_gib"] > 0
    assert (out / "config.json").exists()
    # The final checkpoint loads in transformers and in vLLM, and both decode it alike.
    from transformers import AutoModelForCausalLM

    from parkrl.workers.engine import EngineWorker

    final = AutoModelForCausalLM.from_pretrained(out / "final").eval()
    prompt = [1, 4093, 198, 28, 1232, 216, 35, 446]
    hf_greedy = final.generate(torch.tensor([prompt]), max_new_tokens=8, do_sample=False)[0, len(prompt):].tolist()
    cfg = tiny_config(str(out / "final"), str(tmp_path / "unused"))
    engine = ray_session.remote(EngineWorker).remote(cfg, str(out / "final"), 0)
    try:
        done = ray_session.get(engine.generate.remote([prompt], SamplingSpec(n=1, max_new_tokens=8, temperature=0.0)),
                               timeout=300)
        assert done[0][0].token_ids == hf_greedy[: len(done[0][0].token_ids)]
    finally:
        ray_session.get(engine.shutdown.remote(), timeout=60)
        ray_session.kill(engine)


def test_sync_keeps_engine_equal_to_learner_and_skipping_it_does_not(tiny_model_dir, tmp_path, ray_session):
    from parkrl.workers.cluster import ray_cluster
    from parkrl.workers.fleet import Fleet

    cfg = tiny_config(tiny_model_dir, str(tmp_path / "sync"))
    tok = load_tokenizer(tiny_model_dir)
    data = TaskPrompts(cfg.data, 0)
    reward = load_reward(cfg.reward.cls, {})
    spec = SamplingSpec(n=4, max_new_tokens=12, temperature=1.0, seed=1)

    def rollout():
        batch = generate_single_turn(fleet, tok, data.next_prompts(4), spec)
        batch.add("rewards", torch.tensor(score(reward, tok, batch.response_lists(), batch.samples)[0]))
        batch.add("advantages", ADVANTAGES.get("grpo")(batch["rewards"], torch.tensor(batch.group_ids), cfg.algorithm))
        return batch

    def engine_vs_learner(batch) -> float:
        return logprob_diff(fleet.per_token(batch, "policy"), batch)

    with ray_cluster(cfg):
        fleet = Fleet(cfg, tiny_model_dir)
        try:
            assert engine_vs_learner(rollout()) < SYNC_OK  # same checkpoint on both sides
            for _ in range(3):  # several update + sync rounds
                fleet.update(rollout())
                fleet.sync_weights()
                assert engine_vs_learner(rollout()) < SYNC_OK
            fleet.update(rollout())  # negative control: update, then no sync
            stale = engine_vs_learner(rollout())
            assert stale > 50 * SYNC_OK, f"skipping the sync should show, got {stale}"
        finally:
            fleet.shutdown()


def test_local_runtime_with_hf_engine(tiny_model_dir, tmp_path):
    cfg = tiny_config(tiny_model_dir, str(tmp_path / "local"), trainer__runtime="local", rollout__backend="hf",
                      trainer__total_steps=2, trainer__eval_every=0, trainer__save_final=False)
    cfg.resources.learner.num_workers = 1
    rows = read_metrics(train(cfg))
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["rollout/logprob_diff"] < SYNC_OK for r in rows)
    assert all(r["learner/grad_norm"] > 0 for r in rows)


def test_cli_runs_and_puts_every_file_in_output_dir(tiny_model_dir, tmp_path):
    import subprocess
    import sys

    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "parkrl.train", "recipe=grpo", f"model.path={tiny_model_dir}",
           "trainer.runtime=local", "rollout.backend=hf", "trainer.total_steps=1", "trainer.eval_every=0",
           "trainer.prompts_per_step=2", "rollout.n=2", "rollout.max_new_tokens=4", "learner.dtype=float32",
           "rollout.dtype=float32", "resources.learner.cpus_per_worker=1", "resources.rollout.cpus_per_worker=1",
           "data.eval_size=4", "data.train_size=50", f"trainer.output_dir={out}"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 1/1 | reward" in proc.stdout
    assert {"metrics.jsonl", "samples.jsonl", "config.json", "final", "checkpoints", ".hydra"} <= {p.name for p in out.iterdir()}
    sample = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert sample["step"] == 1 and {"prompt", "completion", "reward", "advantage"} <= set(sample)
    assert not (tmp_path / "outputs").exists()  # nothing written outside trainer.output_dir
