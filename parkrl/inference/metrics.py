"""Eval metrics over n scored samples per prompt: pass@k (the unbiased estimator of Chen et al.
2021, "Evaluating Large Language Models Trained on Code"), and mean@n."""
from __future__ import annotations

from collections import defaultdict
from math import comb
from typing import Any, Iterable


def pass_at_k(n: int, c: int, k: int) -> float:
    """P(at least one of k samples drawn without replacement from n, c of them correct, is
    correct) = 1 - C(n - c, k) / C(n, k)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    return 1.0 if n - c < k else 1.0 - comb(n - c, k) / comb(n, k)


def ks_for(n: int) -> list[int]:
    """The k reported for n samples: 1, 2, 4, ... up to n, and n."""
    ks = [1 << e for e in range(n.bit_length()) if 1 << e <= n]
    return ks + ([n] if ks[-1] != n else [])


def by_prompt(rows: Iterable[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Output rows grouped by input row (what parkrl.inference.pipeline.iter_groups yields, from a list)."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[int(r["row_id"])].append(r)
    return dict(groups)


def eval_metrics(groups: Iterable[list[dict[str, Any]]]) -> dict[str, float]:
    """pass@k for every k of `ks_for(n)` (averaged over prompts; pass@1 is the mean accuracy)
    and mean@n (the mean reward of a prompt's n samples, averaged over prompts), from each
    prompt's n scored samples (read once, in one pass)."""
    prompts, n, sums, reward = 0, 0, defaultdict(float), 0.0
    for g in groups:
        if not prompts:
            n = len(g)
        elif len(g) != n:
            raise ValueError("every prompt needs the same number of samples")
        prompts += 1
        c = sum(bool(r["correct"]) for r in g)
        for k in ks_for(n):
            sums[k] += pass_at_k(n, c, k)
        reward += sum(float(r["reward"]) for r in g) / n
    if not prompts:
        raise ValueError("no scored rows to evaluate")
    out = {"prompts": float(prompts), "n": float(n)}
    out.update({f"pass@{k}": sums[k] / prompts for k in ks_for(n)})
    out[f"mean@{n}"] = reward / prompts
    return out


def pass_rate(group: list[dict[str, Any]]) -> float:
    """An input row's share of correct samples."""
    return sum(bool(r["correct"]) for r in group) / len(group)
