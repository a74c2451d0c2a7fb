"""Print a run's learning curve as a Markdown table (for the recipe pages in docs/).

    .venv/bin/python scripts/curve_table.py outputs/grpo
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [("reward/mean", "train reward", "{:.3f}"), ("eval/accuracy", "eval accuracy", "{:.2f}"),
           ("response/length_mean", "length", "{:.1f}"), ("rollout/logprob_diff", "logprob diff", "{:.1e}"),
           ("timing/step_s", "step s", "{:.1f}")]
BARS = " ▁▂▃▄▅▆▇█"


def spark(values: list[float]) -> str:
    lo, hi = min(values), max(values)
    return "".join(BARS[round((v - lo) / (hi - lo or 1) * (len(BARS) - 1))] for v in values)


def main(run_dir: str) -> None:
    rows = [json.loads(line) for line in open(Path(run_dir) / "metrics.jsonl")]
    print("| step | " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for r in rows:
        cells = [fmt.format(r[k]) if r.get(k) is not None else "" for k, _, fmt in COLUMNS]
        print(f"| {r['step']} | " + " | ".join(cells) + " |")
    rewards = [r["reward/mean"] for r in rows if "reward/mean" in r]
    evals = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    print(f"\ntrain reward {spark(rewards)}  ({rewards[0]:.2f} -> {rewards[-1]:.2f})")
    print(f"eval accuracy {spark(evals)}  ({evals[0]:.2f} -> {evals[-1]:.2f})")
    print(f"total step time {sum(r.get('timing/step_s', 0) for r in rows) / 60:.1f} min")


if __name__ == "__main__":
    main(sys.argv[1])
