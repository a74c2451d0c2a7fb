"""The multi-turn rollout loop: many episodes in flight on one engine.

Each episode alternates assistant turns (sampled by the engine) and environment turns (its
`step`, run in a thread pool). A finished assistant turn goes to its environment at once and the
environment's answer goes straight back to the engine, so one slow episode (a long tool call)
never holds up the others. Tokens are only ever appended: assistant tokens are the sampled ids
(loss mask 1), environment tokens are rendered by the chat template (loss mask 0).

An environment's `step` that takes longer than `env.step_timeout_s` ends its own episode
(finish reason "env_timeout", counted in `env/step_timeouts_mean`), and one that raises either
stops the rollout with an error naming the class, sample and turn (`env.on_error=raise`) or ends
only its episode ("env_error", `env/step_errors_mean`; `env.on_error=end_episode`). Every
environment is closed (`Environment.close`) when its episode ends, and after an error or abort.
"""
from __future__ import annotations

import concurrent.futures as cf
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Any, Callable

from parkrl.engines.types import Completion, SamplingSpec
from parkrl.envs.base import Environment, StepResult
from parkrl.envs.turns import TurnTokens

SEED_STRIDE = 1009  # episode i's turn t samples with seed + i * SEED_STRIDE + t


@dataclass
class EpisodeLimits:
    max_turns: int = 4  # assistant turns per episode
    max_total_tokens: int = 256  # response-side tokens per episode (assistant + environment)
    max_model_len: int = 1024  # prompt + response, the engine's context
    workers: int = 8  # threads running environment steps
    step_timeout_s: float = 60.0  # an environment step running longer ends its episode
    on_error: str = "raise"  # an environment step that raises: raise | end_episode
    max_inflight: int = 64  # episodes open at once (reset, not yet closed); the others wait their turn


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
    finish_reason: str = ""  # done | max_turns | max_tokens | env_timeout | env_error
    truncated: bool = False  # the last assistant turn was cut at its token budget
    info: dict[str, float] = field(default_factory=dict)


def cut_at_stop(c: Completion, stop: tuple[str, ...], tokenizer) -> Completion:
    """The completion up to and including the first token that completes a stop string (an
    engine that honours stop strings, like vLLM, returns it already cut: one decode)."""
    if not stop or not any(s in tokenizer.decode(c.token_ids) for s in stop):
        return c
    k = len(c.token_ids)
    while k > 1 and any(s in tokenizer.decode(c.token_ids[: k - 1]) for s in stop):
        k -= 1
    return Completion(c.token_ids[:k], c.logprobs[:k], "stop")


def run_episodes(engine, make_env: Callable[[], Environment], samples: list[dict[str, Any]], spec: SamplingSpec,
                 tokenizer, limits: EpisodeLimits, prompt_ids: Callable[[list[dict]], list[int]],
                 index_offset: int = 0) -> list[Episode]:
    """Run one episode per sample on `engine` (which offers `submit(id, prompt_ids, spec)`,
    `poll() -> [(id, Completion)]` and `abort(ids)`); returns the episodes in sample order."""
    return _EpisodeLoop(engine, make_env, samples, spec, tokenizer, limits, prompt_ids, index_offset).run()


class _EpisodeLoop:
    """The state of one `run_episodes` call: episodes, their environments, what is in flight."""

    def __init__(self, engine, make_env, samples, spec, tokenizer, limits, prompt_ids, index_offset) -> None:
        self.engine, self.tokenizer, self.limits, self.offset = engine, tokenizer, limits, index_offset
        self.turns = TurnTokens(tokenizer)
        self.samples, self.prompt_ids, self.spec = samples, prompt_ids, spec
        self.envs = [make_env() for _ in samples]
        self.episodes: list[Episode] = [Episode([]) for _ in samples]
        self.specs: list[SamplingSpec] = [spec] * len(samples)  # with each environment's stop strings
        self.waiting = list(range(len(samples)))[::-1]  # not started yet (popped from the end: in order)
        self.in_engine: set[int] = set()
        # (episode, its assistant turn or None for its reset, deadline)
        self.stepping: dict[cf.Future, tuple[int, Completion | None, float]] = {}
        self.open_envs: set[int] = set()  # reset and not yet closed: at most limits.max_inflight

    def _start_waiting(self, pool: cf.ThreadPoolExecutor) -> None:
        """Start waiting episodes while fewer than `max_inflight` are open: their `reset` runs in
        the pool like a step (a slow one holds up no other episode)."""
        while self.waiting and len(self.open_envs) < self.limits.max_inflight:
            i = self.waiting.pop()
            self.open_envs.add(i)
            future = pool.submit(self.envs[i].reset, self.samples[i])
            self.stepping[future] = (i, None, time.monotonic() + self.limits.step_timeout_s)

    def _reset_done(self, i: int, future: cf.Future) -> None:
        """Episode i's first messages are in: its prompt, then its first assistant turn."""
        env, ep = self.envs[i], self.episodes[i]
        ep.prompt_ids = self.prompt_ids(future.result())  # a reset that raised stops the rollout, naming it
        # the environment's stop strings end a turn (e.g. after a tool call); a remote one knows them after reset
        self.specs[i] = replace(self.spec, stop=tuple(dict.fromkeys(self.spec.stop + tuple(env.stop))))
        room = self.limits.max_model_len - len(ep.prompt_ids)
        if room <= 0:
            raise ValueError(f"sample {self.offset + i}: the first prompt has {len(ep.prompt_ids)} tokens, "
                             f"rollout.max_model_len={self.limits.max_model_len}")
        self._submit(i, min(self.spec.max_new_tokens, self.limits.max_total_tokens, room))

    def run(self) -> list[Episode]:
        pool = cf.ThreadPoolExecutor(self.limits.workers, thread_name_prefix="env")
        try:
            self._start_waiting(pool)
            while self.in_engine or self.stepping:
                if self.in_engine:
                    for rid, completion in self.engine.poll():
                        self._assistant_turn(int(rid.split(":")[0]), completion, pool)
                if self.stepping:
                    nearest = min(deadline for _, _, deadline in self.stepping.values())
                    wait_s = 0 if self.in_engine else max(0.0, nearest - time.monotonic())
                    done, _ = cf.wait(list(self.stepping), timeout=wait_s, return_when=cf.FIRST_COMPLETED)
                    for future in done:
                        i, c, _ = self.stepping.pop(future)
                        if c is None:
                            self._reset_done(i, future)
                        else:
                            self._environment_turn(i, c, future)
                    self._end_overdue_steps()
                self._start_waiting(pool)
        finally:  # on an error leave nothing running: requests in the engine, queued environment steps
            if self.in_engine:
                self.engine.abort([self._request_id(i) for i in self.in_engine])
            pool.shutdown(wait=False, cancel_futures=True)
            for i in sorted(self.open_envs):
                self._close(i)
        return self.episodes

    def _end_overdue_steps(self) -> None:
        """End the episodes whose environment step ran past `env.step_timeout_s` (its thread
        cannot be stopped; its answer, if it ever comes, is dropped)."""
        now = time.monotonic()
        for future, (i, c, deadline) in list(self.stepping.items()):
            if now >= deadline and not future.done() and c is None:
                raise TimeoutError(f"{type(self.envs[i]).__name__}.reset of sample {self.offset + i} did not return "
                                   f"within env.step_timeout_s={self.limits.step_timeout_s:g}")
            if now >= deadline and not future.done():
                del self.stepping[future]
                future.cancel()
                self._end(i, "env_timeout", "step_timeouts",
                          f"did not return within env.step_timeout_s={self.limits.step_timeout_s:g}")

    def _end(self, i: int, reason: str, counter: str, what: str) -> None:
        """End episode i early because of its environment, say so on stderr (the run's log) and count it."""
        ep = self.episodes[i]
        ep.finish_reason = reason
        ep.info[counter] = ep.info.get(counter, 0.0) + 1.0
        print(f"[parkrl] warning: {type(self.envs[i]).__name__}.step of sample {self.offset + i} (turn {ep.turns}) "
              f"{what}; that episode ends ({reason})", file=sys.stderr, flush=True)
        self._close(i)

    def _close(self, i: int) -> None:
        """Close episode i's environment once; a failing close is reported, never raised."""
        if i not in self.open_envs:
            return
        self.open_envs.discard(i)
        try:
            self.envs[i].close()
        except Exception as e:  # noqa: BLE001 - the episode is over either way
            print(f"[parkrl] warning: {type(self.envs[i]).__name__}.close of sample {self.offset + i} raised "
                  f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)

    def _request_id(self, i: int) -> str:
        return f"{i}:{self.episodes[i].turns}"  # one id per turn: never reused while vLLM may still hold it

    def _submit(self, i: int, budget: int) -> None:
        ep = self.episodes[i]
        seed = self.spec.seed + (self.offset + i) * SEED_STRIDE + ep.turns
        self.engine.submit(self._request_id(i), ep.prompt_ids + ep.response_ids,
                           replace(self.specs[i], n=1, seed=seed, max_new_tokens=budget))
        self.in_engine.add(i)

    def _assistant_turn(self, i: int, completion: Completion, pool: cf.ThreadPoolExecutor) -> None:
        """Append the sampled turn (loss mask 1) and hand its text to the environment."""
        self.in_engine.discard(i)
        c = cut_at_stop(completion, self.specs[i].stop, self.tokenizer)
        ep = self.episodes[i]
        ep.response_ids += c.token_ids
        ep.loss_mask += [1] * len(c.token_ids)
        ep.logprobs += c.logprobs if c.logprobs else [0.0] * len(c.token_ids)
        ep.final_ids, ep.turns, ep.truncated = list(c.token_ids), ep.turns + 1, c.finish_reason == "length"
        text = self.tokenizer.decode(c.token_ids, skip_special_tokens=True)
        self.stepping[pool.submit(self.envs[i].step, text)] = (i, c, time.monotonic() + self.limits.step_timeout_s)

    def _environment_turn(self, i: int, c: Completion, future: cf.Future) -> None:
        """Record the environment's answer; end the episode or queue its next assistant turn."""
        ep, limits = self.episodes[i], self.limits
        try:
            result: StepResult = future.result()
        except Exception as e:
            if limits.on_error == "end_episode":
                self._end(i, "env_error", "step_errors", f"raised {type(e).__name__}: {e}")
                return
            raise RuntimeError(f"{type(self.envs[i]).__name__}.step of sample {self.offset + i} (turn {ep.turns}) "
                               f"raised {type(e).__name__}: {e}; fix the environment, or set "
                               f"env.on_error=end_episode to end only that episode") from e
        ep.env_reward += float(result.reward)
        for key, value in result.info.items():
            if isinstance(value, (int, float)):
                ep.info[key] = ep.info.get(key, 0.0) + float(value)
        if result.done or ep.turns >= limits.max_turns:
            ep.finish_reason = "done" if result.done else "max_turns"
            self._close(i)
            return
        ended_with_eos = bool(c.token_ids) and c.token_ids[-1] == self.turns.eos_id
        obs = self.turns.observation_ids(result.observation, ended_with_eos)
        used = len(ep.response_ids) + len(obs)
        budget = min(self.spec.max_new_tokens, limits.max_total_tokens - used,
                     limits.max_model_len - len(ep.prompt_ids) - used)
        if budget <= 0:
            ep.finish_reason = "max_tokens"
            self._close(i)
            return
        ep.response_ids += obs
        ep.loss_mask += [0] * len(obs)
        ep.logprobs += [0.0] * len(obs)
        self._submit(i, budget)
