"""What the engine adapters take and return; they know nothing of training."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SamplingSpec:
    n: int = 1  # completions per prompt
    max_new_tokens: int = 32
    temperature: float = 1.0  # 0 = greedy
    seed: int = 0  # sample j of prompt i uses seed + i * n + j: results do not depend on batching
    logprobs: bool = True  # return the logprob of every sampled token
    stop: tuple[str, ...] = ()  # end a completion after any of these strings (kept in the output)


@dataclass
class Completion:
    token_ids: list[int]  # generated ids, the stop (EOS) token included when one was sampled
    logprobs: list[float]  # one per token id (empty when SamplingSpec.logprobs is False)
    finish_reason: str  # "stop" or "length"
