"""Batch inference, eval, filter and sample without training: a Ray Data pipeline over the
trainer's own engines (`python -m parkrl.infer`, `python -m parkrl.eval`; docs/data.md)."""
