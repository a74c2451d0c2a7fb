"""Step metrics: phase timers, metrics.jsonl, and the console progress line."""
from __future__ import annotations

import json
import math
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class PhaseTimer:
    """Times named phases of a step: `with timer("generate"): ...` -> {"timing/generate_s": ...}."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._start = time.perf_counter()

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[f"timing/{phase}_s"] = self.seconds.get(f"timing/{phase}_s", 0.0) + time.perf_counter() - t0

    def metrics(self) -> dict[str, float]:
        return {**self.seconds, "timing/step_s": time.perf_counter() - self._start}


class MetricsWriter:
    """Appends one JSON object per step to `<output_dir>/metrics.jsonl` and prints a line."""

    def __init__(self, output_dir: Path, total_steps: int) -> None:
        self.path = output_dir / "metrics.jsonl"
        self.total_steps = total_steps
        self._file = open(self.path, "w", buffering=1)

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        print(progress_line(row, self.total_steps), flush=True)

    def close(self) -> None:
        self._file.close()


def _clean(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


_SHOWN = [
    ("reward/mean", "reward", "{:.3f}"),
    ("eval/accuracy", "eval", "{:.3f}"),
    ("loss/policy", "loss", "{:+.4f}"),
    ("kl/ref", "kl", "{:.4f}"),
    ("rollout/logprob_diff", "lp_diff", "{:.2e}"),
    ("response/length_mean", "len", "{:.1f}"),
    ("timing/generate_s", "gen", "{:.1f}s"),
    ("timing/update_s", "upd", "{:.1f}s"),
    ("timing/sync_s", "sync", "{:.2f}s"),
    ("timing/step_s", "step", "{:.1f}s"),
]


def progress_line(row: dict, total_steps: int) -> str:
    """One readable line: `step 3/25 | reward 0.410 | loss +0.0012 | ... | step 31.0s`."""
    parts = [f"step {row['step']}/{total_steps}"]
    parts += [f"{label} {fmt.format(row[k])}" for k, label, fmt in _SHOWN if row.get(k) is not None]
    return " | ".join(parts)
