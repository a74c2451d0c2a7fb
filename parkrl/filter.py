"""Keep the prompts a model solves sometimes: `python -m parkrl.filter model.path=... infer.input=rows.jsonl
infer.output=out/ filter.n=8 filter.min_pass=0.1 filter.max_pass=0.9` writes out/filtered.jsonl
(parkrl.inference.select.filter_prompts; docs/data.md)."""
from __future__ import annotations

from parkrl.inference.select import filter_prompts

if __name__ == "__main__":
    from parkrl.inference.cli import main

    main(filter_prompts)
