"""What a run shows, and `train.log`: the driver's stdout and stderr (parkrl's lines, warnings,
errors, and the worker lines Ray forwards) go to the console and, once the run writes its output
directory, also to `output_dir/train.log`, minus third-party noise unless `trainer.verbose=true`.

Noise is a line that says nothing about this run: INFO/DEBUG records of vLLM, Ray and
transformers, progress bars (weights loading, shards written), remarks on the environment
(missing LD_PRELOAD libraries, no Triton on a CPU), warnings about settings parkrl chooses on
purpose (eager mode, chunked prefill off, vLLM's thread binding) and the start-up cast of a
float32 checkpoint into a bfloat16 engine, and deprecation warnings raised inside third-party
packages. Every other warning or error shows. `NOISE` lists the patterns.

`capture()` is installed by the CLI (parkrl.train) around the whole run; `attach(path)` (the
controller, right after the run's checks pass and it writes the output directory) starts the
log file with everything shown so far. Output written straight to the file descriptors by native
code of the driver process is shown but not logged.
"""
from __future__ import annotations

import io
import re
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Ray's prefix of a forwarded worker line: "(EngineWorker pid=123)" or "(FSDPLearner pid=7, ip=10.0.0.2)".
# "(EngineWorker pid=12) ", "(pid=12, ip=...) ", Ray Data's "(MapWorker(MapBatches(Generate)) pid=12) ".
_RAY_PREFIX = re.compile(r"^(?:\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*?pid=[^)]*\) ?)+")

NOISE: tuple[re.Pattern, ...] = tuple(re.compile(p) for p in (
    # INFO/DEBUG records: Ray ("2026-11-30 08:29:39,174\tINFO worker.py:2038 -- ..."), vLLM's own format
    # ("INFO 11-30 08:29:39 [llm.py:12] ..."), glog-style ("I1130 08:29:51.4 ..."), bracketed levels.
    r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d[,.]\d+\s+(INFO|DEBUG)\b",
    r"^(INFO|DEBUG) \d\d-\d\d \d\d:\d\d:\d\d",
    r"^\[?[ID]\d{4} \d\d:\d\d:\d\d",
    r"\[(INFO|DEBUG)\]",
    # progress bars (tqdm): "Loading weights: 100%|####| 20/20 [...]", "... shards:   0% Completed | 0/1 [...]"
    r"\d+%\|.*\|",
    r"\d+% Completed \|",
    # warnings about what parkrl sets on purpose, or about the machine, with nothing to act on
    r"^Attempted to load weight \S+ with dtype torch\.float32 into parameter with dtype torch\.(bfloat16|float16)$",
    r"CPU backend doesn't allow to use `torch\.set_num_threads`",
    r"is not found in LD_PRELOAD",
    r"^The global random seed is set to",
    r"does not officially support disabling chunked prefill",
    r"^Enforce eager set",
    r"^Inductor compilation was disabled",
    r"Triton is not installed|Triton not available|requires Triton",
    r"^Reset SSM cache type",
    r"^OMP_NUM_THREADS=\d+ is set; leaving Torch threads",
    r"NUMA binding: Using MEMBIND policy",
    r"Setting accelerator to CPU",
    # Ray about Ray Data's actor pools (parkrl.infer), whose constructor arguments stay referenced
    r"core_worker\.cc:\d+: Actor with class name: '[^']*' and ID: '\w+' has constructor arguments in the object "
    r"store and max_restarts > 0",
    r"\bWARNING __init__\.py:\d+ -- Progress bars disabled",
))
# A Python warning raised inside an installed package; its next line (the source line) goes with it.
_PACKAGE_WARNING = re.compile(r"[/\\](site|dist)-packages[/\\].*:\d+: \w*(Deprecation|Future)Warning: ")


def is_noise(message: str) -> bool:
    """Whether a line (ANSI codes and Ray's worker prefix already removed) is third-party noise."""
    return any(p.search(message) for p in NOISE)


class _Console:
    """The filter and the log file shared by the two wrapped streams."""

    def __init__(self, verbose: bool) -> None:
        self.verbose = verbose
        self.lock = threading.RLock()
        self.log: TextIO | None = None
        self.live = None  # a rich Console drawing a live progress bar: shown lines go above it
        self.pending: list[str] = []  # lines shown before the log file exists
        self.skip_next: dict[int, str] = {}  # stream id -> prefix of a dropped warning's source line

    def keep(self, stream_id: int, line: str) -> bool:
        if self.verbose:
            return True
        plain = _ANSI.sub("", line)
        match = _RAY_PREFIX.match(plain)
        prefix = match.group(0) if match else ""
        message = plain[len(prefix):]
        skip = self.skip_next.pop(stream_id, None)
        if skip is not None and prefix == skip and message.startswith("  "):
            return False  # the source line under a dropped package warning
        if _PACKAGE_WARNING.search(message):
            self.skip_next[stream_id] = prefix
            return False
        if prefix and not message.strip():
            return False  # a worker's empty line (what a closed progress bar leaves)
        return not is_noise(message)

    def to_log(self, line: str) -> None:
        """Write one shown line to train.log (or keep it until the file exists)."""
        plain = _ANSI.sub("", line)
        with self.lock:
            if self.log is not None:
                self.log.write(plain + "\n")
            else:
                self.pending.append(plain)
                del self.pending[:-10000]


class _Tee(io.TextIOBase):
    """A text stream in place of sys.stdout or sys.stderr: each complete line that is not noise
    goes to the original stream and to the log."""

    def __init__(self, original: TextIO, console: _Console) -> None:
        super().__init__()
        self.original, self._console = original, console
        self._partial = ""

    def write(self, text: str) -> int:
        with self._console.lock:
            raw = self._console.verbose and self._console.live is None
            if raw:  # nothing is dropped: the stream gets the text as written (a bar redraws in place)
                self.original.write(text)
                self.original.flush()
            *parts, self._partial = re.split(r"(\r\n|\r|\n)", self._partial + text)
            for line, end in zip(parts[::2], parts[1::2]):
                if line or end != "\r":  # a "\r" that only starts a redraw ends no line
                    self._emit(line, show=not raw)
        return len(text)

    def _emit(self, line: str, show: bool = True) -> None:
        if not self._console.keep(id(self), line):
            return
        live = self._console.live
        if show and live is not None:  # a progress bar is drawn: print above it (rich redraws the bar below)
            from rich.text import Text

            live.print(Text.from_ansi(line), highlight=False)
        elif show:
            self.original.write(line + "\n")
            self.original.flush()
        self._console.to_log(line)

    def flush(self) -> None:
        self.original.flush()

    def close_partial(self) -> None:
        with self._console.lock:
            if self._partial:
                self._emit(self._partial, show=not (self._console.verbose and self._console.live is None))
                self._partial = ""

    def isatty(self) -> bool:
        return self.original.isatty()

    def fileno(self) -> int:
        return self.original.fileno()

    def writable(self) -> bool:
        return True

    def __getattr__(self, name: str):  # anything else (buffer, name, mode, reconfigure): the original's
        return getattr(self.original, name)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.original, "errors", None)


_active: _Console | None = None


@contextmanager
def capture(verbose: bool = False) -> Iterator[None]:
    """Route sys.stdout and sys.stderr through the noise filter (none when `verbose`) and, after
    `attach`, into a log file, until the block ends."""
    global _active
    console = _Console(verbose)
    out, err = sys.stdout, sys.stderr
    tees = (_Tee(out, console), _Tee(err, console))
    sys.stdout, sys.stderr = tees
    previous, _active = _active, console
    try:
        yield
    finally:
        for tee in tees:
            tee.close_partial()
        sys.stdout, sys.stderr = out, err
        _active = previous
        with console.lock:
            if console.log is not None:
                console.log.close()
                console.log = None


def capturing() -> bool:
    """Whether `capture()` is in effect (the CLI)."""
    return _active is not None


def set_verbose(verbose: bool) -> None:
    """Show third-party noise too (trainer.verbose=true, known once the config is composed)."""
    if _active is not None:
        _active.verbose = verbose


def attach(path: Path) -> None:
    """Start the log file at `path` (appended to: a resumed run continues it) with every line shown
    so far; from now on each shown line goes there too. Nothing happens outside `capture()`."""
    if _active is None:
        return
    with _active.lock:
        if _active.log is not None:
            return
        log = open(path, "a", buffering=1, encoding="utf-8", errors="replace")  # noqa: SIM115 - open for the run
        log.writelines(line + "\n" for line in _active.pending)
        _active.pending = []
        _active.log = log


def set_live(rich_console) -> None:
    """While a rich progress bar is drawn on `rich_console` (None: no more), shown lines are
    printed through it, above the bar, instead of straight to the stream."""
    if _active is not None:
        with _active.lock:
            _active.live = rich_console


def log_only(line: str) -> None:
    """Add a line to the log without printing it (what a terminal progress bar shows by itself)."""
    if _active is not None:
        _active.to_log(line)


def terminal() -> TextIO:
    """The real stdout, for output that must not go through the filter (a live progress bar)."""
    out = sys.stdout
    return out.original if isinstance(out, _Tee) else out
