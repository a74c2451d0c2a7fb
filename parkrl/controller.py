"""The single controller: the RL step loop, one named and timed phase per line of the algorithm.

    generate -> reward -> advantages -> logprobs (old, reference) -> update -> sync -> (eval)
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from parkrl.algorithms import ADVANTAGES, registered_names
from parkrl.batch import TrajectoryBatch
from parkrl.config import Config, validate
from parkrl.data import TaskPrompts
from parkrl.metrics import MetricsWriter, PhaseTimer
from parkrl.models import load_tokenizer, resolve_model_path
from parkrl.rewards import RewardFunction, load_reward
from parkrl.rollout import SamplingSpec
from parkrl.workers.cluster import ray_cluster
from parkrl.workers.fleet import Fleet


def train(cfg: Config) -> Path:
    """Run `cfg.trainer.total_steps` RL steps; returns the output directory."""
    validate(cfg, registered_names())
    out = Path(cfg.trainer.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=2, default=str))
    model_path = resolve_model_path(cfg.model.path, cfg.model.cache_dir)
    tokenizer = load_tokenizer(model_path)
    data = TaskPrompts(cfg.data, shuffle_seed=cfg.trainer.seed)
    reward_fn = load_reward(cfg.reward.cls, dict(cfg.reward.args))
    log = MetricsWriter(out, cfg.trainer.total_steps)
    print(f"[parkrl] model {model_path} | task {cfg.data.task} | {len(data.train)} train / "
          f"{len(data.eval)} eval questions ({data.excluded} eval questions removed from training)", flush=True)

    with ray_cluster(cfg):
        fleet = Fleet(cfg, model_path)
        try:
            if _eval_due(cfg, 0):
                timer = PhaseTimer()
                with timer("eval"):
                    before = evaluate(fleet, tokenizer, reward_fn, data.eval, cfg)
                log.log(0, {**before, **timer.metrics()})
            for step in range(1, cfg.trainer.total_steps + 1):
                log.log(step, rl_step(step, fleet, tokenizer, reward_fn, data, cfg))
            if cfg.trainer.save_final:
                fleet.save_hf(str(out / "final"))
        finally:
            fleet.shutdown()
            log.close()
    return out


def rl_step(step: int, fleet: Fleet, tokenizer, reward_fn: RewardFunction, data: TaskPrompts,
            cfg: Config) -> dict[str, float]:
    """One step of the algorithm; returns its metrics."""
    a, lc, r = cfg.algorithm, cfg.learner, cfg.rollout
    timer = PhaseTimer()
    samples = data.next_prompts(cfg.trainer.prompts_per_step)
    spec = SamplingSpec(n=r.n, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                        seed=cfg.trainer.seed * 1_000_003 + step * 10_007)

    with timer("generate"):
        batch = generate(fleet, tokenizer, samples, spec)
    with timer("reward"):
        rewards = torch.tensor(score(reward_fn, tokenizer, batch.response_ids, batch.samples), dtype=torch.float32)
        batch.add("rewards", rewards)
    batch.add("advantages", ADVANTAGES.get(a.advantage)(rewards, torch.tensor(batch.group_ids), a))
    metrics: dict[str, float] = {}
    with timer("logprobs"):
        if lc.mini_batches > 1 or lc.epochs > 1:  # else the update's first forward is the old policy
            batch.add("old_logprobs", fleet.logprobs(batch, "policy"))
            metrics["rollout/logprob_diff"] = logprob_diff(batch["old_logprobs"], batch)
        if a.kl_coef > 0:
            batch.add("ref_logprobs", fleet.logprobs(batch, "reference"))
    with timer("update"):
        metrics.update(fleet.update(batch))
    with timer("sync"):
        fleet.sync_weights()
    if _eval_due(cfg, step):
        with timer("eval"):
            metrics.update(evaluate(fleet, tokenizer, reward_fn, data.eval, cfg))

    lengths = torch.tensor([len(x) for x in batch.response_ids], dtype=torch.float32)
    metrics.update({
        "reward/mean": rewards.mean().item(),
        "reward/std": rewards.std().item() if len(rewards) > 1 else 0.0,
        "reward/zero_std_groups": zero_std_fraction(rewards, batch.group_ids),
        "response/length_mean": lengths.mean().item(),
        "response/clip_frac": sum(f == "length" for f in batch.finish_reasons) / len(batch),
        **fleet.peak_memory(),
        **timer.metrics(),
    })
    metrics["perf/gen_tokens_per_s"] = lengths.sum().item() / max(metrics["timing/generate_s"], 1e-9)
    trained = sum(len(p) + len(x) for p, x in zip(batch.prompt_ids, batch.response_ids)) * lc.epochs
    metrics["perf/train_tokens_per_s"] = trained / max(metrics["timing/update_s"], 1e-9)
    return metrics


def generate(fleet: Fleet, tokenizer, samples: list[dict[str, Any]], spec: SamplingSpec) -> TrajectoryBatch:
    """Sample spec.n completions per task sample and pack them into a TrajectoryBatch."""
    prompts = [chat_prompt_ids(tokenizer, s["messages"]) for s in samples]
    groups = fleet.generate(prompts, spec)
    rows = [(k, c) for k, group in enumerate(groups) for c in group]
    return TrajectoryBatch(
        prompt_ids=[prompts[k] for k, _ in rows],
        response_ids=[c.token_ids for _, c in rows],
        loss_mask=[[1] * len(c.token_ids) for _, c in rows],
        rollout_logprobs=[c.logprobs for _, c in rows],
        group_ids=[k for k, _ in rows],
        samples=[samples[k] for k, _ in rows],
        finish_reasons=[c.finish_reason for _, c in rows],
    )


def chat_prompt_ids(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat-formatted prompt, ending with the assistant turn's header."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def score(reward_fn: RewardFunction, tokenizer, response_ids: list[list[int]],
          samples: list[dict[str, Any]]) -> list[float]:
    """Rewards for every completion; a wrong count or a non-finite value is an error."""
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    rewards = reward_fn(texts, [s["messages"] for s in samples], samples)
    name = type(reward_fn).__name__
    if len(rewards) != len(texts):
        raise ValueError(f"reward function {name} returned {len(rewards)} rewards for {len(texts)} completions")
    bad = [i for i, v in enumerate(rewards) if not math.isfinite(float(v))]
    if bad:
        raise ValueError(f"reward function {name} returned non-finite rewards for completions {bad[:5]}")
    return [float(v) for v in rewards]


def evaluate(fleet: Fleet, tokenizer, reward_fn: RewardFunction, eval_samples: list[dict[str, Any]],
             cfg: Config) -> dict[str, float]:
    """Greedy accuracy on the held-out eval set."""
    spec = SamplingSpec(n=1, max_new_tokens=cfg.rollout.max_new_tokens, temperature=0.0, logprobs=False)
    prompts = [chat_prompt_ids(tokenizer, s["messages"]) for s in eval_samples]
    responses = [group[0].token_ids for group in fleet.generate(prompts, spec)]
    rewards = score(reward_fn, tokenizer, responses, eval_samples)
    return {
        "eval/accuracy": sum(reward_fn.is_correct(v) for v in rewards) / len(rewards),
        "eval/reward_mean": sum(rewards) / len(rewards),
    }


def logprob_diff(learner_logprobs: list[list[float]], batch: TrajectoryBatch) -> float:
    """Mean |learner logprob - rollout logprob| over trained tokens (same policy version)."""
    total, count = 0.0, 0
    for lp, rp, mask in zip(learner_logprobs, batch.rollout_logprobs, batch.loss_mask):
        for a, b, m in zip(lp, rp, mask):
            if m:
                total += abs(a - b)
                count += 1
    return total / max(count, 1)


def zero_std_fraction(rewards: torch.Tensor, group_ids: list[int]) -> float:
    """Fraction of groups whose rewards are all equal (they carry no GRPO signal)."""
    groups: dict[int, list[float]] = {}
    for g, v in zip(group_ids, rewards.tolist()):
        groups.setdefault(g, []).append(v)
    return sum(max(v) == min(v) for v in groups.values()) / max(len(groups), 1)


def _eval_due(cfg: Config, step: int) -> bool:
    every = cfg.trainer.eval_every
    return every > 0 and (step % every == 0 or step == cfg.trainer.total_steps)
