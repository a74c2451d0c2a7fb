"""How a run ends: one exit code per class of failure (the table is in docs/operating.md).

    0    done, or stopped cleanly on SIGINT/SIGTERM (a checkpoint saved after the current step)
    1    an unexpected error inside parkrl (a bug: the traceback is printed; please report it)
    2    bad input, caught before any worker starts: config, model.path, data, trainer.output_dir
    3    a worker died or timed out (a node lost, an OOM kill, a hang): running the same
         command again continues from the last checkpoint
    4    the run failed on its input or user code: a reward function, environment or worker
         raised, or losses went NaN/inf; a rerun as is fails the same way, fix the cause first
    130  interrupted: a second Ctrl-C, or a signal before the first step (no checkpoint)
"""
from __future__ import annotations

from types import TracebackType

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_WORKER_LOST = 3
EXIT_RUN_FAILED = 4
EXIT_INTERRUPTED = 130


class RunError(RuntimeError):
    """The run stopped on its own input or user code (a reward function or environment raised,
    NaN/inf losses): running it again unchanged fails the same way. The message names the fix."""


class RewardError(RunError, ValueError):
    """The run's reward function raised, or returned the wrong number of rewards or non-finite ones."""


def exit_code(error: BaseException) -> int:
    """The exit code of the CLI for a run that ended with `error`."""
    from parkrl.config import ConfigError
    from parkrl.workers.group import WorkerDied, WorkerError, WorkerTimeout

    if isinstance(error, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    if isinstance(error, ConfigError):
        return EXIT_BAD_INPUT
    if isinstance(error, (WorkerDied, WorkerTimeout)):
        return EXIT_WORKER_LOST
    if isinstance(error, (RunError, WorkerError)):
        return EXIT_RUN_FAILED
    return EXIT_INTERNAL


def raised_in(error: BaseException, modules: set[str]) -> bool:
    """Whether `error`, or an exception it was raised from, passed through code of `modules`
    (say the user's reward module): its traceback has a frame of one of them."""
    seen: set[int] = set()
    e: BaseException | None = error
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        tb: TracebackType | None = e.__traceback__
        while tb is not None:
            name = tb.tb_frame.f_globals.get("__name__") or ""
            if any(name == m or name.startswith(m + ".") for m in modules):
                return True
            tb = tb.tb_next
        e = e.__cause__ or e.__context__
    return False
