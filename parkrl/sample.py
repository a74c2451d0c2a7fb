"""SFT data from a model's own samples: `python -m parkrl.sample model.path=... infer.input=rows.jsonl
infer.output=out/ sample.n=4 sample.keep=correct` writes out/sft.jsonl
(parkrl.inference.select.sample_sft; docs/data.md)."""
from __future__ import annotations

from parkrl.inference.select import sample_sft

if __name__ == "__main__":
    from parkrl.inference.cli import main

    main(sample_sft)
