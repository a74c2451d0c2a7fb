"""The command lines `python -m parkrl.infer` and `python -m parkrl.eval`: compose the config as
`parkrl.train` does (recipe=NAME and key=value overrides, the same schema and checks), run, and
exit with parkrl's exit codes (parkrl.runs.errors): 2 for bad input, caught before any actor
starts, with a last line `parkrl: error: <cause>` naming the key to fix."""
from __future__ import annotations

import os
import sys
from typing import Callable

from parkrl.config import Config


def main(run: Callable[[Config], object], argv: list[str] | None = None) -> None:
    from parkrl.runs import console
    from parkrl.runs.errors import EXIT_INTERNAL, exit_code

    args = list(sys.argv[1:] if argv is None else argv)
    recipes = [a.split("=", 1)[1] for a in args if a.startswith("recipe=")]
    overrides = [a for a in args if not a.startswith("recipe=")]
    os.environ["HYDRA_FULL_ERROR"] = "1"
    with console.capture():
        try:
            from parkrl.api import compose

            cfg = compose(recipes[-1] if recipes else "grpo", overrides)
            if cfg.trainer.verbose:
                console.set_verbose(True)
            run(cfg)
        except BaseException as e:  # noqa: BLE001 - every way it ends maps to one exit code
            if isinstance(e, SystemExit):
                raise
            code = exit_code(e)
            if code == EXIT_INTERNAL:
                import traceback

                traceback.print_exception(e)
            message = (str(e).strip() or type(e).__name__)
            print(f"parkrl: error: {message}", file=sys.stderr, flush=True)
            sys.exit(code)
