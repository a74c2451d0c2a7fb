"""Batch inference: `python -m parkrl.infer model.path=... infer.input=rows.parquet infer.output=out/`.

Generates infer.n completions per row with the trainer's engines (rollout.*), scores them with
reward.cls and writes shards to infer.output (parkrl.inference.pipeline; docs/data.md)."""
from __future__ import annotations

from parkrl.config import Config
from parkrl.inference.pipeline import InferSummary, run_infer


def infer(cfg: Config) -> InferSummary:
    return run_infer(cfg)


if __name__ == "__main__":
    from parkrl.inference.cli import main

    main(infer)
