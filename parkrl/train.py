"""Command-line entry: `python -m parkrl.train recipe=grpo trainer.total_steps=20 rollout.n=8`.

Hydra composes the typed schema (parkrl.config.Config) with the chosen recipe and the command
line overrides; a misspelled key, a `+key` that parkrl does not read, or a wrong type fails
here, before any worker starts. Every way a run ends has its own exit code
(parkrl.runs.errors, docs/operating.md#exit-codes), and the last line of a failed run's output
is `parkrl: error: <cause>`.
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import re
import shutil
import signal
import sys
import traceback
import typing
from pathlib import Path
from typing import Any

import hydra
from hydra.core.config_store import ConfigStore
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from parkrl.config import Config, ConfigError
from parkrl.runs import console
from parkrl.runs.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_RUN_FAILED, exit_code

CONF_DIR = str(Path(__file__).with_name("conf"))
ConfigStore.instance().store(name="parkrl_schema", node=Config)
# Where a `+key=value` override may add keys: the free-form dicts (user arguments, Ray placement).
FREE_FORM = ("data.task_args", "data.eval_task_args", "reward.args", "env.args", "custom_resources", "node_labels",
             "runtime_env")


def to_config(cfg: DictConfig) -> Config:
    """The composed Hydra config as a typed Config object; a key that no field of the schema
    reads (added with `+key=value`) is a ConfigError naming it."""
    unknown = unknown_keys(OmegaConf.to_container(cfg, resolve=False), Config)
    if unknown:
        raise ConfigError("\n".join(unknown) if len(unknown) == 1 else "unknown config keys:\n  - " + "\n  - ".join(unknown))
    return OmegaConf.to_object(cfg)


def unknown_keys(node: Any, schema: type, prefix: str = "") -> list[str]:
    """Messages for the keys of `node` (a plain container) that the dataclass `schema` does not
    have, recursively; free-form dict fields (`dict[str, ...]`) take any key."""
    if not isinstance(node, dict):
        return []
    hints = typing.get_type_hints(schema)
    fields = {f.name for f in dataclasses.fields(schema)}
    problems = []
    for key, value in node.items():
        full = f"{prefix}{key}"
        if key not in fields:
            problems.append(_unknown_key_message(full, schema))
            continue
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            problems += unknown_keys(value, hint, f"{full}.")
        elif typing.get_origin(hint) is list and dataclasses.is_dataclass((typing.get_args(hint) or (None,))[0]):
            for i, item in enumerate(value or []):
                problems += unknown_keys(item, typing.get_args(hint)[0], f"{full}[{i}].")
    return problems


def _unknown_key_message(full_key: str, schema: type | None) -> str:
    parent, _, name = full_key.rpartition(".")
    options = [f.name for f in dataclasses.fields(schema)] if schema and dataclasses.is_dataclass(schema) else []
    close = difflib.get_close_matches(name, options, n=1)
    if close:
        known = f"did you mean {parent + '.' if parent else ''}{close[0]}?"
    else:
        known = f"{'the keys of ' + parent if parent else 'the config groups'}: {', '.join(options)}"
    return (f"{full_key}: no such config key ({known}). parkrl reads no other key; a '+key=value' override only "
            f"adds entries to free-form dicts ({', '.join(FREE_FORM)})")


def composition_error(e: Exception) -> str | None:
    """A one-paragraph message for an error Hydra or OmegaConf raised while composing the config
    (an unknown key, a wrong type, a missing recipe, an override it cannot parse); None for any
    other error."""
    from hydra.errors import HydraException
    from omegaconf.errors import ConfigKeyError, OmegaConfBaseException, ValidationError

    cause = e.__cause__
    if isinstance(cause, ConfigKeyError) or type(cause).__name__ == "ConfigAttributeError":
        full_key = getattr(cause, "full_key", None) or ""
        override = re.search(r"override '([^']+)'", str(e))
        if override and not full_key.startswith(override.group(1).split("=")[0].rsplit(".", 1)[0]):
            full_key = f"{override.group(1)} (key {full_key})"
        return _unknown_key_message(full_key, getattr(cause, "object_type", None))
    if isinstance(cause, ValidationError):
        key = getattr(cause, "full_key", "") or ""
        return f"{key}: {str(cause).splitlines()[0]}" if key else str(cause).splitlines()[0]
    if isinstance(e, (HydraException, OmegaConfBaseException)):
        return str(e).split("Config search path:")[0].strip()
    return None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> None:
    """The CLI: compose the config (Hydra) and run; exit with the code of how the run ended."""
    os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors; we report them (exit 2, no traceback)
    signal.signal(signal.SIGTERM, _interrupt)  # until the run installs its own stop handling
    # The console without third-party noise (unless trainer.verbose), and train.log: what it shows.
    with console.capture():
        try:
            _hydra_main()
        except KeyboardInterrupt as e:  # while Hydra composed the config or set up the output directory
            try:
                from hydra.core.hydra_config import HydraConfig

                _remove_if_only_hydra_files(Path(HydraConfig.get().runtime.output_dir))
            except Exception:  # noqa: BLE001, S110 - no output directory yet: nothing to remove
                pass
            _report(e, EXIT_INTERRUPTED)
        except Exception as e:  # Hydra's composition errors: bad input on the command line
            message = composition_error(e)
            if message is None:
                raise
            _fail(EXIT_BAD_INPUT, message)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="parkrl")
def _hydra_main(cfg: DictConfig) -> None:
    from hydra.core.hydra_config import HydraConfig

    out = Path(HydraConfig.get().runtime.output_dir)
    try:
        config = to_config(cfg)
        if config.trainer.verbose:
            _verbose()
        from parkrl.controller import train

        train(config)
    except BaseException as e:  # every way a run ends maps to one exit code
        if isinstance(e, SystemExit):
            raise
        code = exit_code(e)
        if code in (EXIT_BAD_INPUT, EXIT_INTERRUPTED):
            _remove_if_only_hydra_files(out)
        _report(e, code)


def _verbose() -> None:
    """trainer.verbose=true: show everything, third-party INFO records and progress bars included."""
    import logging

    console.set_verbose(True)
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "1")  # an engine in this process (trainer.runtime=local)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")


def _report(e: BaseException, code: int) -> None:
    """Print what went wrong and exit with `code`. Bad input: the message (it names the key, file
    or row to fix). After the workers started: the details (the user's traceback for code 4, the
    full one for a parkrl bug), the hint what to do, and a last line `parkrl: error: <cause>`."""
    if code == EXIT_INTERRUPTED:
        name = e.args[0] if e.args else "SIGINT"
        notes = getattr(e, "__notes__", [])
        _fail(code, f"interrupted by {name}; " + (notes[0] if notes else "no worker had started, nothing was written"))
    message = str(e).strip() or type(e).__name__
    if code == EXIT_BAD_INPUT:
        _fail(code, message)
    if code == EXIT_INTERNAL:
        traceback.print_exception(e)
        print("parkrl: this looks like a bug in parkrl; please report it with the traceback above", file=sys.stderr)
    elif code == EXIT_RUN_FAILED and not _is_remote(e) and _root(e) is not e:
        traceback.print_exception(_root(e), chain=False)  # the user's code: where it raised
    if code != EXIT_INTERNAL and "\n" in message:
        print(f"parkrl: {message}", file=sys.stderr)  # a worker's own traceback
    for note in getattr(e, "__notes__", []):
        print(f"parkrl: {note}", file=sys.stderr)
    _fail(code, _one_line(e))


def _one_line(e: BaseException) -> str:
    """The cause in one line: the error's first line, with the innermost exception's text when
    the first line does not say it (a worker's error names the worker, then the cause)."""
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    root = _root(e)
    if root is not e:
        text = (str(root).strip().splitlines() or [""])[-1]
        if text not in first:
            first = f"{first.split(' failed:')[0]} failed: {type(root).__name__}: {text}"
    return first[:500]


def _root(e: BaseException) -> BaseException:
    """The innermost exception `e` was raised from (a Ray task error's original exception)."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = getattr(e, "cause", None) if isinstance(getattr(e, "cause", None), BaseException) else e.__cause__
        if inner is None:
            break
        e = inner
    return e


def _is_remote(e: BaseException) -> bool:
    """Whether `e` carries a worker's traceback in its message already (a Ray task error)."""
    return any(type(x).__name__.startswith("RayTaskError") for x in (e, e.__cause__) if x is not None)


def _fail(code: int, message: str) -> None:
    print(f"parkrl: error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


class NoteOutputDir(Callback):
    """A Hydra callback (conf/parkrl.yaml): before Hydra creates the run's output directory and
    writes its own files there, note what the directory held (None: it did not exist)."""

    before: typing.ClassVar[dict[str, set[str] | None]] = {}

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(config.hydra.run.dir)).absolute()
        NoteOutputDir.before[str(path)] = {p.name for p in path.iterdir()} if path.is_dir() else None


def _remove_if_only_hydra_files(out: Path) -> None:
    """Bad input leaves nothing behind: if this run added nothing to the output directory but
    Hydra's own files (.hydra/, train.log), remove those, and the directory if Hydra made it."""
    out = out.absolute()
    if str(out) not in NoteOutputDir.before:
        return  # not noted: remove nothing
    before = NoteOutputDir.before[str(out)]
    try:
        added = {p.name for p in out.iterdir()} - (before or set())
    except OSError:
        return
    if not added <= {".hydra", "train.log"}:
        return  # the run wrote its own files: keep the directory as it is
    for name in added:
        shutil.rmtree(out / name, ignore_errors=True) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)
    if before is None:
        try:
            out.rmdir()  # only if empty
        except OSError:
            pass


if __name__ == "__main__":
    from parkrl.train import main as _main  # one module object: the Hydra callback notes into this one

    _main()
