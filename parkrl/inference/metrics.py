"""Eval metrics over n scored samples per prompt: pass@k (the unbiased estimator of Chen et al.
2021, "Evaluating Large Language Models Trained on Code"), and mean@n."""
from __future__ import annotations

from collections import defaultdict
from math import comb
from typing import Any


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


def by_prompt(rows: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Output rows (parkrl.inference.pipeline.read_output) grouped by input row."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[int(r["row_id"])].append(r)
    return dict(groups)


def eval_metrics(rows: list[dict[str, Any]]) -> dict[str, float]:
    """pass@k for every k of `ks_for(n)` (averaged over prompts; pass@1 is the mean accuracy)
    and mean@n (the mean reward of a prompt's n samples, averaged over prompts)."""
    groups = by_prompt(rows)
    if not groups:
        raise ValueError("no scored rows to evaluate")
    n = min(len(g) for g in groups.values())
    if any(len(g) != n for g in groups.values()):
        raise ValueError("every prompt needs the same number of samples")
    out = {"prompts": float(len(groups)), "n": float(n)}
    for k in ks_for(n):
        out[f"pass@{k}"] = sum(pass_at_k(n, sum(bool(r["correct"]) for r in g), k) for g in groups.values()) / len(groups)
    out[f"mean@{n}"] = sum(sum(float(r["reward"]) for r in g) / n for g in groups.values()) / len(groups)
    return out


def pass_rates(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Each input row's share of correct samples."""
    return {i: sum(bool(r["correct"]) for r in g) / len(g) for i, g in by_prompt(rows).items()}
