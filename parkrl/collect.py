"""Collecting one step's batch: generate, score, shape rewards, and (DAPO) keep sampling until
enough prompt groups carry a learning signal.

Fields added to the batch: "scores" (the combined reward: rule, reward models, environment;
reported as reward/mean), "task_scores" (the rule reward alone: what dynamic sampling filters
on) and "rewards" (scores after overlong shaping; what the advantages are computed from).
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import torch

from parkrl.batch import TrajectoryBatch, pad_ragged
from parkrl.config import AlgorithmConfig, Config
from parkrl.data import TaskPrompts
from parkrl.engines import SamplingSpec
from parkrl.models import chat_prompt_ids
from parkrl.rewards import RewardFunction
from parkrl.runs.errors import RewardError
from parkrl.runs.metrics import PhaseTimer


def collect_batch(step: int, fleet, tokenizer, reward_fn: RewardFunction, data: TaskPrompts, cfg: Config,
                  timer: PhaseTimer) -> tuple[TrajectoryBatch, dict[str, float]]:
    """`trainer.prompts_per_step` groups of `rollout.n` scored samples, and sampling metrics.

    With `algorithm.dynamic_sampling`, groups whose task scores are all equal (every sample
    right, or every one wrong: DAPO's filter, on the unshaped score) are set aside and more
    prompts are drawn, up to `algorithm.dynamic_sampling_max_rounds` rounds;
    if the cap is hit, set-aside groups fill the remainder so the batch size stays fixed.
    """
    a, r = cfg.algorithm, cfg.rollout
    want = cfg.trainer.prompts_per_step
    rounds = a.dynamic_sampling_max_rounds if a.dynamic_sampling else 1
    kept: list[TrajectoryBatch] = []
    spare: list[TrajectoryBatch] = []
    drawn = errors = 0
    for rnd in range(rounds):
        spec = SamplingSpec(n=r.n, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                            seed=cfg.trainer.seed * 1_000_003 + step * 10_007 + rnd * 7_919_993)
        samples = data.next_prompts(want)
        with timer("generate"):
            part = generate_batch(fleet, tokenizer, samples, spec, cfg, group_offset=drawn, mask_truncated=a.overlong_filter)
        drawn += len(samples)
        with timer("reward"):
            scores, task_scores, failed = episode_scores(part, reward_fn, tokenizer, cfg, fleet)
            part.add("task_scores", task_scores)
            errors += failed
            part.add("scores", scores)
            part.add("rewards", overlong_shaped(scores, part, a, r.max_new_tokens))
        if not a.dynamic_sampling:
            kept.append(part)
            break
        informative, flat = split_by_signal(part)
        kept += [informative] if len(informative) else []
        spare += [flat] if len(flat) else []
        if sum(len(b) for b in kept) >= want * r.n:
            break
    drawn_scores = torch.cat([b["scores"] for b in kept + spare])
    batch = TrajectoryBatch.concat(kept + spare)
    if len(batch) % r.n or len(set(batch.group_ids)) != len(batch) // r.n:
        raise RuntimeError(f"engines must return rollout.n={r.n} completions per prompt")
    batch = batch.select(list(range(want * r.n)))  # groups are contiguous: the first `want` groups
    return batch, {
        **episode_metrics(batch),
        "scores_drawn": drawn_scores,
        "rollout/prompts_drawn": float(drawn),
        "rollout/filled_groups": float(max(0, want - sum(len(b) for b in kept) // r.n)),
        "reward/errors": float(errors),
    }


def generate_batch(fleet, tokenizer, samples: list[dict[str, Any]], spec: SamplingSpec, cfg: Config, group_offset: int = 0,
            mask_truncated: bool = False) -> TrajectoryBatch:
    """spec.n completions per sample: multi-turn episodes when `env.cls` is set, else single turns."""
    if cfg.env.cls:
        return generate_episodes(fleet, samples, spec, group_offset, mask_truncated)
    return generate_single_turn(fleet, tokenizer, samples, spec, group_offset, mask_truncated)


def generate_single_turn(fleet, tokenizer, samples: list[dict[str, Any]], spec: SamplingSpec, group_offset: int = 0,
             mask_truncated: bool = False) -> TrajectoryBatch:
    """Sample spec.n completions per task sample and pack them into a TrajectoryBatch.

    Completions cut at the token budget get loss mask 0 when `mask_truncated` (DAPO's overlong
    filtering): they are scored, but not trained on.
    """
    prompts = [chat_prompt_ids(tokenizer, s["messages"]) for s in samples]
    groups = fleet.generate(prompts, spec)
    rows = [(k, c) for k, group in enumerate(groups) for c in group]
    for i, (_, c) in enumerate(rows):
        if c.logprobs and len(c.logprobs) != len(c.token_ids):
            raise ValueError(f"completion {i}: {len(c.logprobs)} logprobs for {len(c.token_ids)} tokens")
    # The engines' lists become padded tensors here, once (no logprobs asked for: zeros).
    ids, lengths = pad_ragged([c.token_ids for _, c in rows], torch.long)
    logprobs, _ = pad_ragged([c.logprobs or () for _, c in rows], width=ids.shape[1])
    trained = torch.tensor([not (mask_truncated and c.finish_reason == "length") for _, c in rows], dtype=torch.float32)
    return TrajectoryBatch(
        prompt_ids=[prompts[k] for k, _ in rows],
        response_ids=ids,
        response_lengths=lengths,
        loss_mask=(torch.arange(ids.shape[1]) < lengths.unsqueeze(1)) * trained.unsqueeze(1),
        rollout_logprobs=logprobs,
        group_ids=[group_offset + k for k, _ in rows],
        samples=[samples[k] for k, _ in rows],
        finish_reasons=[c.finish_reason for _, c in rows],
    )


def generate_episodes(fleet, samples: list[dict[str, Any]], spec: SamplingSpec, group_offset: int = 0,
                      mask_truncated: bool = False) -> TrajectoryBatch:
    """spec.n multi-turn episodes per task sample (env.cls), packed into a TrajectoryBatch with
    the fields "env_rewards", "final_ids" (last assistant turn) and "episode_info"."""
    rows = [(k, s) for k, s in enumerate(samples) for _ in range(spec.n)]
    episodes = fleet.episodes([s for _, s in rows], replace(spec, n=1))
    cut = [ep.finish_reason != "done" or ep.truncated for ep in episodes]  # ran out of turns or tokens
    batch = TrajectoryBatch.from_lists(
        prompt_ids=[ep.prompt_ids for ep in episodes],
        response_ids=[ep.response_ids for ep in episodes],
        loss_mask=[[0] * len(ep.loss_mask) if mask_truncated and c else ep.loss_mask for ep, c in zip(episodes, cut)],
        rollout_logprobs=[ep.logprobs for ep in episodes],
        group_ids=[group_offset + k for k, _ in rows],
        samples=[s for _, s in rows],
        finish_reasons=["length" if c else "stop" for c in cut],
    )
    batch.add("env_rewards", torch.tensor([ep.env_reward for ep in episodes], dtype=torch.float32))
    batch.add("final_ids", [ep.final_ids for ep in episodes])
    batch.add("episode_info", [{"turns": ep.turns, **ep.info} for ep in episodes])
    return batch


def episode_scores(batch: TrajectoryBatch, reward_fn: RewardFunction, tokenizer, cfg: Config,
                   fleet=None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(score, task score, reward-function calls that failed) of each sample:

        score      = reward.weight * reward function + sum_k reward.models[k].weight * model k
                     (+ the environment's turn rewards in multi-turn episodes)
        task score = the reward function's value (the environment's rewards when it alone scores):
                     what eval/accuracy counts (`RewardFunction.is_correct`) and what DAPO's
                     dynamic sampling filters on

    Reward function and models see the completion; in multi-turn episodes the final assistant
    turn, and only when env.final_reward."""
    multi_turn = "env_rewards" in batch
    total = batch["env_rewards"].clone() if multi_turn else torch.zeros(len(batch))
    task = total.clone()
    failed = 0
    if not multi_turn or cfg.env.final_reward:
        ids = batch["final_ids"] if multi_turn else batch.response_lists()
        values, failed = score(reward_fn, tokenizer, ids, batch.samples, cfg.reward.on_error)
        task = torch.tensor(values, dtype=torch.float32)
        total += cfg.reward.weight * task
        if cfg.reward.models:
            texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
            prompts = [str(s.get("question", "")) for s in batch.samples]
            total += torch.tensor(fleet.model_rewards(prompts, texts), dtype=torch.float32)
    return total, task, failed


def episode_metrics(batch: TrajectoryBatch) -> dict[str, float]:
    """Turns and tool use per episode (multi-turn batches only), plus `env/<key>_mean` for every
    number an environment reported in `StepResult.info` (summed over each episode's turns)."""
    if "episode_info" not in batch:
        return {}
    info = batch["episode_info"]
    n = max(len(info), 1)
    tokens = batch.num_response_tokens
    keys = sorted({k for i in info for k, v in i.items() if k != "turns" and isinstance(v, (int, float))})
    return {
        "env/turns_mean": sum(i["turns"] for i in info) / n,
        "env/tool_calls_mean": sum(i.get("tool_calls", 0) for i in info) / n,  # 0 when the environment reports none
        "env/tool_call_rate": sum(i.get("tool_calls", 0) > 0 for i in info) / n,
        "env/tool_errors_mean": sum(i.get("tool_errors", 0) for i in info) / n,
        **{f"env/{k}_mean": sum(i.get(k, 0) for i in info) / n for k in keys if k not in ("tool_calls", "tool_errors")},
        "env/env_token_frac": (tokens - int(batch.loss_mask.count_nonzero())) / max(tokens, 1),
    }


def score(reward_fn: RewardFunction, tokenizer, response_ids: list[list[int]],
          samples: list[dict[str, Any]], on_error: str = "raise") -> tuple[list[float], int]:
    """Rewards for every completion, and how many raised. A wrong count or a non-finite value
    is an error. If the reward function raises: with on_error="raise" the error names the
    completion; with "zero" the batch is rescored one completion at a time and those that
    raise score 0.

    The reward function gets each task sample with two keys added (on a copy: the task's own
    dict is shared by the samples of a group): "response_ids", the completion's token ids as
    the engine sampled them, and "num_response_tokens", their count (what a length penalty
    needs; the text alone would need the tokenizer)."""
    texts = tokenizer.batch_decode(response_ids, skip_special_tokens=True)
    samples = [{**s, "response_ids": list(ids), "num_response_tokens": len(ids)} for s, ids in zip(samples, response_ids)]
    name = type(reward_fn).__name__
    try:
        rewards = list(reward_fn(texts, [s["messages"] for s in samples], samples))
        errors = 0
    except Exception as batch_error:
        rewards, errors = [], 0
        for i, (text, sample) in enumerate(zip(texts, samples)):
            try:
                rewards += list(reward_fn([text], [sample["messages"]], [sample]))
            except Exception as e:
                if on_error != "zero":
                    raise RewardError(
                        f"reward function {name} raised on completion {i} of {len(texts)} {text[:200]!r} "
                        f"(question {str(sample.get('question'))[:200]!r}): {type(e).__name__}: {e}. "
                        f"Fix the reward, or set reward.on_error=zero to score such completions 0"
                    ) from e
                rewards.append(0.0)
                errors += 1
        if errors == 0 and on_error != "zero":  # only the batch call failed: report that
            raise RewardError(f"reward function {name} raised on a batch of {len(texts)}: {batch_error}") from batch_error
    if len(rewards) != len(texts):
        raise RewardError(f"reward function {name} returned {len(rewards)} rewards for {len(texts)} completions")
    bad = [i for i, v in enumerate(rewards) if not math.isfinite(float(v))]
    if bad:
        raise RewardError(f"reward function {name} returned non-finite rewards for completions {bad[:5]}")
    return [float(v) for v in rewards], errors


def overlong_shaped(scores: torch.Tensor, batch: TrajectoryBatch, a: AlgorithmConfig, max_new_tokens: int) -> torch.Tensor:
    """DAPO's soft overlong punishment: with `algorithm.overlong_buffer = B > 0`, a completion (in
    multi-turn episodes: the final assistant turn, whose budget is max_new_tokens) of
    length L > max_new_tokens - B loses overlong_penalty * (L - (max_new_tokens - B)) / B
    (the full penalty at the budget); shorter ones are unchanged."""
    if a.overlong_buffer <= 0:
        return scores.clone()
    start = max_new_tokens - a.overlong_buffer
    if "final_ids" in batch:  # multi-turn: the answer turn
        lengths = torch.tensor([len(x) for x in batch["final_ids"]], dtype=torch.float32)
    else:
        lengths = batch.response_lengths.float()
    return scores - a.overlong_penalty * ((lengths - start).clamp(min=0) / a.overlong_buffer).clamp(max=1.0)


def split_by_signal(batch: TrajectoryBatch) -> tuple[TrajectoryBatch, TrajectoryBatch]:
    """(rows of groups whose scores differ, rows of groups whose scores are all equal).

    The task score decides, not the shaped reward: overlong shaping makes rewards differ by
    length even when every answer is equally right or wrong."""
    by_group: dict[int, list[int]] = {}
    for i, g in enumerate(batch.group_ids):
        by_group.setdefault(g, []).append(i)
    rewards = batch["task_scores"].tolist()
    informative = [i for rows in by_group.values() if len({rewards[j] for j in rows}) > 1 for i in rows]
    flat = [i for rows in by_group.values() if len({rewards[j] for j in rows}) <= 1 for i in rows]
    return batch.select(informative), batch.select(flat)
