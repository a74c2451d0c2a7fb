"""Step metrics: phase timers, metrics.jsonl (+ TensorBoard/W&B), samples.jsonl, progress."""
from __future__ import annotations

import json
import math
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from parkrl.runs import console
from parkrl.runs.trackers import make_trackers


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
    """Writes each step's metrics to `metrics.jsonl` (and the configured trackers), sample
    completions to `samples.jsonl`, and shows progress: a live bar with ETA on a terminal, one
    line per step otherwise (logs, CI).

    On resume from step `start_step`, rows after it (from the interrupted attempt) are dropped,
    so each step appears once.
    """

    def __init__(self, output_dir: Path, total_steps: int, start_step: int = 0, loggers: list[str] = (),
                 config: dict[str, Any] | None = None, wandb_project: str = "parkrl",
                 lp_diff: LogprobDiffRange | None = None) -> None:
        self.lp_diff = lp_diff  # what rollout/logprob_diff should be for the run's dtypes (None: no check)
        self.path = Path(output_dir) / "metrics.jsonl"
        self.samples_path = Path(output_dir) / "samples.jsonl"
        self.total_steps = total_steps
        self._file = _reopen(self.path, start_step)
        self._samples = _reopen(self.samples_path, start_step)
        self._trackers = make_trackers(list(loggers), Path(output_dir), config or {}, wandb_project, start_step)
        self._eta = Eta(start_step)
        self._bar = ProgressBar(total_steps, start_step) if sys.stdout.isatty() else None

    def log(self, step: int, metrics: dict[str, float]) -> None:
        row = {"step": step, **{k: _clean(v) for k, v in metrics.items()}}
        self._file.write(json.dumps(row) + "\n")
        for tracker in self._trackers:
            tracker.log(step, row)
        line = progress_line(row, self.total_steps, self._eta.update(step, self.total_steps), self.lp_diff)
        if self._bar is not None:
            self._bar.update(step, line)
        else:
            print(line, flush=True)
        warning = self.lp_diff.warning(row) if self.lp_diff is not None else None
        if warning:
            print(f"[parkrl] warning: step {step}: {warning}", file=sys.stderr, flush=True)

    def log_samples(self, step: int, rows: list[dict[str, Any]]) -> None:
        for r in rows:
            self._samples.write(json.dumps({"step": step, **r}) + "\n")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        for tracker in self._trackers:
            tracker.close()
        self._file.close()
        self._samples.close()


def _reopen(path: Path, start_step: int):
    """Open a JSONL log for appending, keeping only rows of steps <= start_step (all rows are
    dropped when start_step is 0: a fresh run; a line torn by a kill is dropped too)."""
    kept = []
    if start_step > 0 and path.exists():
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= start_step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):
                pass  # a line torn by a kill mid-write
    f = open(path, "w", buffering=1)
    f.writelines(line + "\n" for line in kept)
    return f


def _clean(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


class Eta:
    """Seconds left, from the mean wall time of the steps run in this process."""

    def __init__(self, start_step: int) -> None:
        self._t0, self._first = time.monotonic(), start_step

    def update(self, step: int, total: int) -> float | None:
        done = step - self._first
        return (time.monotonic() - self._t0) / done * (total - step) if done > 0 else None


class ProgressBar:
    """A rich progress bar (steps done, elapsed, ETA) pinned below the per-step metric lines."""

    def __init__(self, total_steps: int, start_step: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        # Straight to the terminal: the bar's redraws stay out of train.log, which gets each step's
        # line (log_only). Under the CLI's capture everything else printed meanwhile goes through
        # parkrl.runs.console, which shows it above the bar and logs it; else rich redirects it.
        redirect = not console.capturing()
        self._progress = Progress(TextColumn("[bold]parkrl"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("eta"), TimeRemainingColumn(), console=Console(file=console.terminal()),
                                  redirect_stdout=redirect, redirect_stderr=redirect)
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step)
        self._progress.start()
        console.set_live(self._progress.console)

    def update(self, step: int, line: str) -> None:
        self._progress.console.print(line, markup=False, highlight=False)  # a permanent line per step above the bar
        console.log_only(line)
        self._progress.update(self._task, completed=step)

    def close(self) -> None:
        console.set_live(None)
        self._progress.stop()


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


# rollout/logprob_diff with the same weights on both sides: (normal low, normal high, flagged above)
LOGPROB_DIFF_EXPECTED = {"float32": (1e-6, 1e-5, 1e-3), "bfloat16": (0.006, 0.045, 0.1)}


class LogprobDiffRange:
    """What `rollout/logprob_diff` (the mean |engine - learner| logprob of the same tokens, same
    weights) should be for the run's resolved dtypes, measured on recipe=grpo:

        float32 engine and learner          about 1e-6 .. 1e-5
        bfloat16 on either side             about 0.006 .. 0.045 (bf16 rounding of every
                                            weight and activation, differently in vLLM's kernels
                                            and the learner's)

    A value above `flag_above` (1e-3 in fp32, where one skipped sync gave > 0.05; 0.1 with bf16)
    is marked "(!)" in the progress line and warned about: the engines likely sample from other
    weights than the learner trains. One step off the learner is an update ahead by design, so
    nothing is flagged there."""

    def __init__(self, rollout_dtype: str, learner_dtype: str, one_step_off: bool = False) -> None:
        dtypes = {str(rollout_dtype).removeprefix("torch."), str(learner_dtype).removeprefix("torch.")}
        self.precision = "float32" if dtypes == {"float32"} else "bfloat16"
        self.low, self.high, self.flag_above = LOGPROB_DIFF_EXPECTED[self.precision]
        self.one_step_off = one_step_off
        self.dtypes = f"rollout {str(rollout_dtype).removeprefix('torch.')}, learner {str(learner_dtype).removeprefix('torch.')}"

    def abnormal(self, value: float | None) -> bool:
        return value is not None and not self.one_step_off and value > self.flag_above

    def warning(self, row: dict) -> str | None:
        """The warning for a row whose logprob_diff is abnormal for these dtypes, else None."""
        value = row.get("rollout/logprob_diff")
        if not self.abnormal(value):
            return None
        return (f"rollout/logprob_diff {value:.2e} is above {self.flag_above:g}; with {self.dtypes} it is normally "
                f"{self.low:g}-{self.high:g}. The engines may be sampling from other weights than the learner "
                f"trains (a weight sync that did not arrive); see docs/concepts.md#weight-sync")


def progress_line(row: dict, total_steps: int, eta_s: float | None = None,
                  lp_diff: LogprobDiffRange | None = None) -> str:
    """One readable line: `step 3/25 | reward 0.410 | loss +0.0012 | ... | step 31.0s | eta 11m2s`;
    `lp_diff` gets "(!)" when abnormal for the run's dtypes (`LogprobDiffRange`)."""
    parts = [f"step {row['step']}/{total_steps}"]
    for k, label, fmt in _SHOWN:
        if row.get(k) is not None:
            flag = " (!)" if k == "rollout/logprob_diff" and lp_diff is not None and lp_diff.abnormal(row[k]) else ""
            parts.append(f"{label} {fmt.format(row[k])}{flag}")
    if eta_s is not None and row["step"] < total_steps:
        parts.append(f"eta {int(eta_s // 60)}m{int(eta_s % 60):02d}s")
    return " | ".join(parts)
