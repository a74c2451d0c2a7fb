"""One RL step, one named and timed phase per line of the algorithm:

    generate -> reward -> logprobs (old, reference, values) -> advantages -> update -> sync -> (eval)

With `rollout.one_step_off` the first two come from a batch generated during the previous
step (parkrl.batch_source), and the sync waits for the next one to finish.
"""
from __future__ import annotations

from typing import Any

import torch

from parkrl.algorithms import ADVANTAGES, KL_ESTIMATORS, logprob_diff_sum, masked_whiten
from parkrl.batch import TrajectoryBatch
from parkrl.batch_source import BatchSource
from parkrl.collect import episode_metrics, episode_scores, generate_batch
from parkrl.config import Config
from parkrl.data import TaskPrompts
from parkrl.engines import SamplingSpec
from parkrl.rewards import RewardFunction
from parkrl.runs.metrics import PhaseTimer
from parkrl.workers.fleet import Fleet


def rl_step(step: int, fleet: Fleet, source: BatchSource, tokenizer, reward_fn: RewardFunction, data: TaskPrompts,
            cfg: Config) -> tuple[dict[str, float], TrajectoryBatch]:
    """One step of the algorithm; returns its metrics and the trained batch."""
    a, lc = cfg.algorithm, cfg.learner
    timer = PhaseTimer()

    batch, metrics = source.batch(step, timer)  # generate + reward (now, or one step ahead)
    fleet.release_engines()  # colocated on GPUs: vLLM sleeps while the learner works
    with timer("logprobs"):
        if lc.mini_batches > 1 or lc.epochs > 1:  # else the update's first forward is the old policy
            batch.add("old_logprobs", fleet.per_token(batch, "policy"))
            metrics["rollout/logprob_diff"] = logprob_diff(batch["old_logprobs"], batch)
        if a.kl_coef > 0:
            batch.add("ref_logprobs", fleet.per_token(batch, "reference"))
        if ADVANTAGES.uses_critic(a.advantage):
            batch.add("values", fleet.per_token(batch, "critic"))
    metrics.update(add_advantages(batch, a))
    with timer("update"):
        metrics.update(fleet.update(batch))
    source.settle(timer)  # one step off: the next batch is complete, the engines are idle
    with timer("sync"):
        fleet.sync_weights()
        fleet.at_step_boundary()  # an elastic fleet: engines leave (preempted) or join here
    if eval_due(cfg, step):
        with timer("eval"):
            metrics.update(evaluate(fleet, tokenizer, reward_fn, data.eval, cfg))

    scores = metrics.pop("scores_drawn")  # every sample generated this step, kept or not
    lengths = batch.response_lengths.float()
    metrics.update({
        "reward/mean": scores.mean().item(),
        "reward/trained_mean": batch["scores"].mean().item(),
        "reward/std": scores.std().item() if len(scores) > 1 else 0.0,
        "reward/shaped_mean": batch["rewards"].mean().item(),
        "reward/zero_std_groups": zero_std_fraction(batch["rewards"], batch.group_ids),
        "response/length_mean": lengths.mean().item(),
        "response/clip_frac": sum(f == "length" for f in batch.finish_reasons) / len(batch),
        **fleet.peak_memory(),
        **timer.metrics(),
    })
    gen_s = metrics.get("timing/generate_s", metrics.get("timing/ahead_generate_s", 0.0))
    metrics["perf/gen_tokens_per_s"] = lengths.sum().item() / max(gen_s, 1e-9)
    trained = (sum(len(p) for p in batch.prompt_ids) + batch.num_response_tokens) * lc.epochs
    metrics["perf/train_tokens_per_s"] = trained / max(metrics["timing/update_s"], 1e-9)
    metrics["workers/restarts"] = float(fleet.restarts)
    if fleet.elastic:
        metrics.update(fleet.elastic_metrics())
    return metrics, batch


def add_advantages(batch: TrajectoryBatch, a) -> dict[str, float]:
    """Add "advantages" (and "returns" for a token-level estimator such as GAE) to the batch, by
    the estimator `a.advantage`; returns KL-in-reward metrics. Outcome estimators give [N]
    advantages, token-level ones [N, T] (0 off the trained tokens).

    With `algorithm.kl_in=reward` the per-token penalty kl_coef * KL(policy || reference) is
    subtracted from the reward: token by token for GAE, summed over the sample otherwise. GAE
    runs over each response's trained tokens only, so in multi-turn episodes the environment's
    tokens (loss mask 0) are skipped, not treated as the end of the episode. With
    `algorithm.whiten_advantages` (default: on for token-level estimators, as in verl and
    OpenRLHF) the advantages are then whitened over the batch's trained tokens (or samples).
    """
    kl, metrics = None, {}
    mask = batch.loss_mask  # trained tokens
    if a.kl_coef > 0 and a.kl_in == "reward":
        policy = batch["old_logprobs"] if "old_logprobs" in batch else batch.rollout_logprobs
        kl = KL_ESTIMATORS.get(a.kl_estimator)(policy, batch["ref_logprobs"]) * mask  # trained tokens only
        metrics["kl/ref"] = (kl.sum() / mask.sum().clamp(min=1)).item()
    estimator = ADVANTAGES.get(a.advantage)
    if ADVANTAGES.level(a.advantage) == "token":
        # Compact each row to its trained tokens, left-aligned: [N, W], W the most trained tokens.
        trained = mask.bool()
        counts = trained.sum(1)
        rows, cols = trained.nonzero(as_tuple=True)  # row-major: each row's trained tokens in order
        at = (rows, (trained.cumsum(1) - 1)[rows, cols])  # their places in the compact rows
        width = max(int(counts.max()) if len(batch) else 0, 1)
        values, prefix, token_rewards = (torch.zeros(len(batch), width) for _ in range(3))
        values[at], prefix[at] = batch["values"][rows, cols], 1.0
        ends = (counts > 0).nonzero(as_tuple=True)[0]
        token_rewards[ends, counts[ends] - 1] = batch["rewards"][ends]  # the outcome, on the last trained token
        if kl is not None:
            token_rewards[at] -= a.kl_coef * kl[rows, cols]
        adv, returns = estimator(token_rewards, values, prefix, a)
        for name, compact in (("advantages", adv), ("returns", returns)):
            full = torch.zeros(batch.response_ids.shape, dtype=compact.dtype)  # 0 off the trained tokens
            full[rows, cols] = compact[at]
            whiten = name == "advantages" and whitens_advantages(a)  # returns keep their scale: the critic's target
            batch.add(name, masked_whiten(full, mask) if whiten else full)
    else:
        rewards = batch["rewards"] if kl is None else batch["rewards"] - a.kl_coef * kl.sum(-1)
        adv = estimator(rewards, torch.tensor(batch.group_ids), a)
        batch.add("advantages", masked_whiten(adv, mask.any(1)) if whitens_advantages(a) else adv)
    return metrics


def whitens_advantages(a) -> bool:
    """`algorithm.whiten_advantages`, its default resolved: on for token-level estimators (GAE)."""
    return a.whiten_advantages if a.whiten_advantages is not None else ADVANTAGES.level(a.advantage) == "token"


def evaluate(fleet: Fleet, tokenizer, reward_fn: RewardFunction, eval_samples: list[dict[str, Any]],
             cfg: Config) -> dict[str, float]:
    """Greedy accuracy on the held-out eval set (whole episodes when env.cls is set)."""
    spec = SamplingSpec(n=1, max_new_tokens=cfg.rollout.max_new_tokens, temperature=0.0, logprobs=False)
    batch = generate_batch(fleet, tokenizer, eval_samples, spec, cfg)
    scores, task, _ = episode_scores(batch, reward_fn, tokenizer, cfg, fleet)
    return {
        "eval/accuracy": sum(reward_fn.is_correct(v) for v in task.tolist()) / len(task),
        "eval/reward_mean": scores.mean().item(),
        **{k.replace("env/", "eval/"): v for k, v in episode_metrics(batch).items()},
    }


def logprob_diff(learner_logprobs: torch.Tensor, batch: TrajectoryBatch) -> float:
    """Mean |learner logprob - rollout logprob| over trained tokens (the same policy version,
    unless rollout.one_step_off: then the learner is one update ahead). Summed in float64."""
    total = logprob_diff_sum(learner_logprobs.double(), batch.rollout_logprobs.double(), batch.loss_mask)
    return total.item() / max(int(batch.loss_mask.count_nonzero()), 1)


def sample_rows(batch: TrajectoryBatch, tokenizer, k: int) -> list[dict[str, Any]]:
    """The first `k` samples of the batch as readable rows for samples.jsonl ("advantage": the
    sample's, or the mean over its response tokens for a token-level estimator)."""
    rows = []
    adv = batch["advantages"]
    for i in range(min(k, len(batch))):
        n = int(batch.response_lengths[i])
        per_token = adv[i, :n].tolist() if adv.dim() == 2 else None
        rows.append({
            "prompt": batch.samples[i].get("question"),  # the user turn (the chat template adds the rest)
            "completion": tokenizer.decode(batch.response_ids[i, :n].tolist(), skip_special_tokens=True),
            "answer": batch.samples[i].get("answer"),
            "score": float(batch["scores"][i]),
            "reward": float(batch["rewards"][i]),
            "advantage": float(adv[i]) if per_token is None else sum(per_token) / max(len(per_token), 1),
            "group": batch.group_ids[i],
            "finish_reason": batch.finish_reasons[i],
        })
    return rows


def zero_std_fraction(rewards: torch.Tensor, group_ids: list[int]) -> float:
    """Fraction of groups whose rewards are all equal (they carry no GRPO signal)."""
    groups: dict[int, list[float]] = {}
    for g, v in zip(group_ids, rewards.tolist()):
        groups.setdefault(g, []).append(v)
    return sum(max(v) == min(v) for v in groups.values()) / max(len(groups), 1)


def eval_due(cfg: Config, step: int) -> bool:
    """Eval at step 0, every `trainer.eval_every` steps and after the last step (0 = never)."""
    every = cfg.trainer.eval_every
    return every > 0 and (step % every == 0 or step == cfg.trainer.total_steps)
