"""Picking from batch inference's scored samples: the prompts a model solves sometimes
(`python -m parkrl.filter`) and SFT conversations of its good samples (`python -m parkrl.sample`).
Both run batch inference first (or reuse its complete output: a rerun skips written shards)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from parkrl.config import Config
from parkrl.data.files import write_jsonl
from parkrl.inference.metrics import pass_rate
from parkrl.inference.pipeline import iter_groups, run_infer, say

FILTERED = "filtered.jsonl"
SFT = "sft.jsonl"


def filter_prompts(cfg: Config) -> Path:
    """Write infer.output/filtered.jsonl: the input rows whose pass rate (share of their filter.n
    samples that reward.cls counts correct) is within [filter.min_pass, filter.max_pass], each
    with "pass_rate"; a file that data.train_file reads as it is. Streams: one shard of results
    and one slice of input rows at a time."""
    f = cfg.filter
    summary = run_infer(cfg, f.n)
    counts = {"rows": 0, "kept": 0}

    def kept() -> Iterator[dict[str, Any]]:
        size = cfg.infer.batch_size
        for row_id, group in iter_groups(summary.output):
            if row_id % size == 0:
                inputs = summary.source.rows(row_id, row_id + size)
            counts["rows"] += 1
            rate = pass_rate(group)
            if f.min_pass <= rate <= f.max_pass:
                counts["kept"] += 1
                yield {**inputs[row_id % size][1], "pass_rate": rate}

    path = summary.output / FILTERED
    write_jsonl(path, kept())
    say(f"[parkrl] filter: kept {counts['kept']} of {counts['rows']} rows with a pass rate in [{f.min_pass}, "
        f"{f.max_pass}] (of filter.n={f.n} samples each) -> {path}")
    return path


def sample_sft(cfg: Config) -> Path:
    """Write infer.output/sft.jsonl: one {"messages": prompt + the assistant's completion,
    "row_id", "sample", "reward"} per kept sample of sample.n per row; sample.keep: correct
    (reward.cls's is_correct), best (each row's highest reward, first on ties), all."""
    keep = cfg.sample.keep
    summary = run_infer(cfg, cfg.sample.n)

    def conversations() -> Iterator[dict[str, Any]]:
        for _, group in iter_groups(summary.output):
            if keep == "best":
                group = [max(group, key=lambda r: r["reward"])]
            for r in group:
                if keep != "correct" or r["correct"]:
                    yield {"messages": [*r["messages"], {"role": "assistant", "content": r["completion"]}],
                           "row_id": r["row_id"], "sample": r["sample"], "reward": r["reward"]}

    path = summary.output / SFT
    count = write_jsonl(path, conversations())
    say(f"[parkrl] sample: {count} conversations (sample.keep={keep}) of {summary.rows} rows -> {path}")
    return path
