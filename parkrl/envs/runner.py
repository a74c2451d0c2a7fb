"""The multi-turn rollout loop: many episodes in flight on one engine.

Each episode alternates assistant turns (sampled by the engine) and environment turns (its
`step`, run in a thread pool). A finished assistant turn goes to its environment at once and the
environment's answer goes straight back to the engine, so one slow episode (a long tool call)
never holds up the others. Tokens are only ever appended: assistant tokens are the sampled ids
(loss mask 1), environment tokens are rendered by the chat template (loss mask 0).
"""
from __future__ import annotations

import concurrent.futures as cf
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from parkrl.envs.base import Environment, StepResult
from parkrl.envs.turns import TurnTokens
from parkrl.rollout.types import Completion, SamplingSpec

SEED_STRIDE = 1009  # episode i's turn t samples with seed + i * SEED_STRIDE + t


@dataclass
class EpisodeLimits:
    max_turns: int = 4  # assistant turns per episode
    max_total_tokens: int = 256  # response-side tokens per episode (assistant + environment)
    max_model_len: int = 1024  # prompt + response, the engine's context
    workers: int = 8  # threads running environment steps


@dataclass
class Episode:
    """One finished episode; `response_ids`, `loss_mask` and `logprobs` align token by token."""

    prompt_ids: list[int]
    response_ids: list[int] = field(default_factory=list)
    loss_mask: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    final_ids: list[int] = field(default_factory=list)  # the last assistant turn
    env_reward: float = 0.0
    turns: int = 0
    finish_reason: str = ""  # done | max_turns | max_tokens
    info: dict[str, float] = field(default_factory=dict)


def cut_at_stop(c: Completion, stop: tuple[str, ...], tokenizer) -> Completion:
    """The completion up to and including the first token that completes a stop string."""
    if not stop or not any(s in tokenizer.decode(c.token_ids) for s in stop):
        return c
    for k in range(1, len(c.token_ids) + 1):
        if any(s in tokenizer.decode(c.token_ids[:k]) for s in stop):
            return Completion(c.token_ids[:k], c.logprobs[:k], "stop")
    return c


def run_episodes(engine, make_env: Callable[[], Environment], samples: list[dict[str, Any]], spec: SamplingSpec,
                 tokenizer, limits: EpisodeLimits, prompt_ids: Callable[[list[dict]], list[int]],
                 index_offset: int = 0) -> list[Episode]:
    """Run one episode per sample on `engine` (which offers `submit(id, prompt_ids, spec)` and
    `poll() -> [(id, Completion)]`); returns the episodes in sample order."""
    turns = TurnTokens(tokenizer)
    envs = [make_env() for _ in samples]
    if envs:  # the environment's stop strings end a turn (e.g. after a tool call)
        spec = replace(spec, stop=tuple(dict.fromkeys(spec.stop + tuple(envs[0].stop))))
    episodes = [Episode(prompt_ids(env.reset(s))) for env, s in zip(envs, samples)]
    in_engine: set[int] = set()
    stepping: dict[cf.Future, tuple[int, Completion]] = {}

    def submit(i: int, budget: int) -> None:
        ep = episodes[i]
        seed = spec.seed + (index_offset + i) * SEED_STRIDE + ep.turns
        engine.submit(str(i), ep.prompt_ids + ep.response_ids, replace(spec, n=1, seed=seed, max_new_tokens=budget))
        in_engine.add(i)

    for i, ep in enumerate(episodes):
        room = limits.max_model_len - len(ep.prompt_ids)
        if room <= 0:
            raise ValueError(f"sample {index_offset + i}: the first prompt has {len(ep.prompt_ids)} tokens, "
                             f"rollout.max_model_len={limits.max_model_len}")
        submit(i, min(spec.max_new_tokens, limits.max_total_tokens, room))

    with cf.ThreadPoolExecutor(limits.workers, thread_name_prefix="env") as pool:
        while in_engine or stepping:
            if in_engine:
                for rid, completion in engine.poll():
                    i = int(rid)
                    in_engine.discard(i)
                    c = cut_at_stop(completion, spec.stop, tokenizer)
                    ep = episodes[i]
                    ep.response_ids += c.token_ids
                    ep.loss_mask += [1] * len(c.token_ids)
                    ep.logprobs += c.logprobs if c.logprobs else [0.0] * len(c.token_ids)
                    ep.final_ids, ep.turns = list(c.token_ids), ep.turns + 1
                    text = tokenizer.decode(c.token_ids, skip_special_tokens=True)
                    stepping[pool.submit(envs[i].step, text)] = (i, c)
            if stepping:
                done, _ = cf.wait(list(stepping), timeout=0 if in_engine else None, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    i, c = stepping.pop(future)
                    _after_step(i, c, future, episodes[i], turns, limits, spec, submit, index_offset)
    return episodes


def _after_step(i: int, c: Completion, future: cf.Future, ep: Episode, turns: TurnTokens, limits: EpisodeLimits,
                spec: SamplingSpec, submit: Callable[[int, int], None], index_offset: int) -> None:
    """Record the environment's answer; end the episode or queue its next assistant turn."""
    try:
        result: StepResult = future.result()
    except Exception as e:
        raise RuntimeError(f"environment step of sample {index_offset + i} (turn {ep.turns}) raised: "
                           f"{type(e).__name__}: {e}") from e
    ep.env_reward += float(result.reward)
    for key, value in result.info.items():
        if isinstance(value, (int, float)):
            ep.info[key] = ep.info.get(key, 0.0) + float(value)
    if result.done:
        ep.finish_reason = "done"
        return
    if ep.turns >= limits.max_turns:
        ep.finish_reason = "max_turns"
        return
    ended_with_eos = bool(c.token_ids) and c.token_ids[-1] == turns.eos_id
    obs = turns.observation_ids(result.observation, ended_with_eos)
    used = len(ep.response_ids) + len(obs)
    budget = min(spec.max_new_tokens, limits.max_total_tokens - used, limits.max_model_len - len(ep.prompt_ids) - used)
    if budget <= 0:
        ep.finish_reason = "max_tokens"
        return
    ep.response_ids += obs
    ep.loss_mask += [0] * len(obs)
    ep.logprobs += [0.0] * len(obs)
    submit(i, budget)
