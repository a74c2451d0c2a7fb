"""Cutting a learner rank's samples into micro-batches (one forward/backward each).

Samples are sorted by length first, so each micro-batch pads to a similar length (or by
prompt, then length, when samples of a group share their prompt's forward: see
parkrl.models.response.SharedPromptBatch). With
`learner.max_tokens_per_micro_batch` set, a micro-batch holds as many samples as fit in that
many padded tokens (rows x longest row), so short samples go many to a pass and long ones few:
every pass costs about the same, and memory is bounded by tokens rather than by sample count.
Each sample stays its own row with its own attention mask, so no sample attends to another.
The loss is normalised over the whole mini-batch, so how it is cut does not change the gradient.
"""
from __future__ import annotations


def plan_micro_batches(lengths: list[int], max_samples: int, max_tokens: int = 0,
                       keys: list | None = None) -> list[list[int]]:
    """Row indices of each micro-batch, rows taken in order of `keys` (default: `lengths`).
    `max_tokens` = 0: fixed `max_samples` per micro-batch; else up to `max_samples` rows while
    rows x longest row <= `max_tokens` (a row longer than the budget goes alone)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] if keys is None else keys[i])
    if max_tokens <= 0:
        return [order[k:k + max_samples] for k in range(0, len(order), max_samples)]
    plans: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for i in order:
        if current and ((len(current) + 1) * max(longest, lengths[i]) > max_tokens or len(current) == max_samples):
            plans.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, lengths[i])
    if current:
        plans.append(current)
    return plans


def padded_tokens(lengths: list[int], plans: list[list[int]]) -> int:
    """Tokens the passes compute, padding included."""
    return sum(len(rows) * max(lengths[i] for i in rows) for rows in plans)


def split_to_count(plans: list[list[int]], count: int) -> list[list[int]]:
    """`plans` cut into exactly `count` micro-batches by halving the widest ones.

    Every learner rank must run the same number of forward/backward passes (FSDP2 and ZeRO-3
    gather and reduce in each), while token budgets can give ranks different counts; the rank
    with fewer passes splits its widest ones. Needs count <= number of rows."""
    plans = [list(rows) for rows in plans]
    if count > sum(len(rows) for rows in plans):
        raise ValueError(f"cannot cut {sum(len(r) for r in plans)} rows into {count} micro-batches")
    while len(plans) < count:
        k = max(range(len(plans)), key=lambda i: len(plans[i]))
        rows = plans.pop(k)
        plans[k:k] = [rows[: len(rows) // 2], rows[len(rows) // 2:]]
    return plans
