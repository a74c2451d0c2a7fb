"""Picking from batch inference's scored samples: the prompts a model solves sometimes
(`python -m parkrl.filter`) and SFT conversations of its good samples (`python -m parkrl.sample`).
Both run batch inference first (or reuse its complete output: a rerun skips written shards)."""
from __future__ import annotations

from pathlib import Path

from parkrl.config import Config
from parkrl.data.files import write_jsonl
from parkrl.inference.metrics import by_prompt, pass_rates
from parkrl.inference.pipeline import read_output, run_infer, say

FILTERED = "filtered.jsonl"
SFT = "sft.jsonl"


def filter_prompts(cfg: Config) -> Path:
    """Write infer.output/filtered.jsonl: the input rows whose pass rate (share of their infer.n
    samples that reward.cls counts correct) is within [infer.min_pass, infer.max_pass], each with
    "pass_rate"; a file that data.train_file reads as it is."""
    summary = run_infer(cfg, "infer")
    rates = pass_rates(read_output(summary.output))
    lo, hi = cfg.infer.min_pass, cfg.infer.max_pass
    kept = [{**sample, "pass_rate": rates[i]} for i, (_, sample) in enumerate(summary.inputs) if lo <= rates[i] <= hi]
    path = summary.output / FILTERED
    write_jsonl(path, kept)
    say(f"[parkrl] filter: kept {len(kept)} of {len(rates)} rows with a pass rate in [{lo}, {hi}] "
        f"(of infer.n={cfg.infer.n} samples each) -> {path}")
    return path


def sample_sft(cfg: Config) -> Path:
    """Write infer.output/sft.jsonl: one {"messages": prompt + the assistant's completion,
    "row_id", "sample", "reward"} per kept sample; infer.keep: correct (reward.cls's is_correct),
    best (each row's highest reward, first on ties), all."""
    summary = run_infer(cfg, "infer")
    keep = cfg.infer.keep
    rows = []
    for group in by_prompt(read_output(summary.output)).values():
        if keep == "best":
            group = [max(group, key=lambda r: r["reward"])]
        for r in group:
            if keep != "correct" or r["correct"]:
                rows.append({"messages": [*r["messages"], {"role": "assistant", "content": r["completion"]}],
                             "row_id": r["row_id"], "sample": r["sample"], "reward": r["reward"]})
    path = summary.output / SFT
    write_jsonl(path, rows)
    say(f"[parkrl] sample: {len(rows)} conversations (infer.keep={keep}) of {summary.rows} rows -> {path}")
    return path
