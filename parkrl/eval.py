"""Evaluate a checkpoint on a file: `python -m parkrl.eval model.path=... data.eval_file=... eval.n=8
infer.output=out/eval`. Runs batch inference (parkrl.infer) with eval.n samples per eval row,
then prints and writes (infer.output/eval.json) pass@k for k = 1, 2, 4, ..., n and mean@n,
correctness being reward.cls's `is_correct`."""
from __future__ import annotations

import json

from parkrl.config import Config
from parkrl.inference.metrics import eval_metrics
from parkrl.inference.pipeline import iter_groups, run_infer, say


def evaluate(cfg: Config) -> dict[str, float]:
    summary = run_infer(cfg, cfg.eval.n, role="eval")
    metrics = eval_metrics(group for _, group in iter_groups(summary.output))
    (summary.output / "eval.json").write_text(json.dumps(metrics, indent=2) + "\n")
    say("[parkrl] eval: " + " | ".join(f"{k} {v:.4f}" if "@" in k else f"{k} {int(v)}" for k, v in metrics.items())
        + f" -> {summary.output / 'eval.json'}")
    return metrics


if __name__ == "__main__":
    from parkrl.inference.cli import main

    main(evaluate)
