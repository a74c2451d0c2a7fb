"""Samples from your own files: JSONL, Parquet, CSV or Arrow, or a directory of them.

One reader for `data.train_file` and `data.eval_file`: find the files, read each into rows,
keep the rows `data.filter` selects, shuffle them (`data.shuffle`), cut to `data.max_rows`, and
turn each kept row into a sample {"question", "answer", "messages", ...its other fields}, the
prompt and answer read from the fields `data.prompt_key`, `data.answer_key` and
`data.messages_key`. Every error names the file and row, the fields present and the fix.

JSONL is read line by line with `json` (exact line numbers in errors; rows may differ in their
fields). Parquet, CSV and Arrow go through HF `datasets` (`load_dataset("parquet", ...)`), which
reads them with pyarrow and caches them as Arrow under HF_DATASETS_CACHE. `datasets` is
imported only when such a file is read.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
from array import array
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, Iterable, Iterator

from parkrl.config import ConfigError, DataConfig
from parkrl.data.assets import DATA_ASSETS, cached_asset

# file suffix -> the `datasets` builder that reads it ("" = parkrl's own line reader)
FORMATS = {".jsonl": "", ".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}

# Field names that usually hold a prompt or an answer, for the fix an error suggests.
PROMPT_FIELDS = ("prompt", "problem", "question", "query", "instruction", "input", "text")
ANSWER_FIELDS = ("answer", "solution", "ground_truth", "reference", "target", "label", "final_answer", "output")
MESSAGES_FIELDS = ("messages", "conversations", "chat", "prompt")


class DatasetError(ConfigError):
    """A dataset file that cannot be used; the message names the file and the row."""


def read_samples(path: str, key: str, system_prompt: str = "", data: DataConfig | None = None,
                 seed: int = 0) -> list[dict[str, Any]]:
    """The samples of `path` (a file, a directory of files or a named data set), picked and
    mapped as `data` says (its defaults: every row, fields "question"/"messages"/"answer"). A
    row needs the answer field and either the prompt field (a string, sent as the user turn
    after `system_prompt`) or the messages field (a chat list, sent as is); other fields are
    kept for the reward function. `key` is the config key that named the path."""
    options = replace(data or DataConfig(), system_prompt=system_prompt)
    return [sample for _, sample in read_rows(path, key, options, seed)]


def read_rows(path: str, key: str, data: DataConfig, seed: int) -> list[tuple[str, dict[str, Any]]]:
    """`read_samples`, each sample with where it came from ("file:line" for JSONL, "file row N"
    otherwise); `seed` shuffles when `data.shuffle`."""
    plan = plan_rows(path, key, data, seed)
    return plan.rows(0, len(plan))


def plan_rows(path: str, key: str, data: DataConfig, seed: int) -> RowPlan:
    """Which rows of `path` `data` picks (filter, shuffle, max_rows), and in which order, without
    holding their contents: a JSONL file is kept as line offsets, the others as `datasets`'
    memory-mapped Arrow cache. `RowPlan.rows(start, end)` reads and maps a slice, so a reader
    holds one slice at a time however large the data set."""
    tables = [_open(file, name) for file, name in _files(path, key)]
    picked = [(t, i) for t in range(len(tables)) for i in range(len(tables[t]))]
    if not picked:
        raise DatasetError(f"{key}={path!r}: the file has no rows" if len(tables) == 1 else
                           f"{key}={path!r}: its {len(tables)} files have no rows")
    if data.filter:
        keep = RowFilter.parse(data.filter)
        values = [keep.column_of(t) for t in tables]
        kept = [(t, i) for t, i in picked if keep.matches(values[t][i])]
        if not kept:
            seen = sorted({_text(v) for column in values for v in column if v is not None})
            raise DatasetError(f"data.filter={data.filter!r} keeps none of the {len(picked)} rows of {key}={path!r} "
                               f"(values of {keep.column!r} there: {', '.join(seen[:10]) or 'none'}"
                               f"{', ...' if len(seen) > 10 else ''})")
        picked = kept
    if data.shuffle:
        random.Random(seed).shuffle(picked)
    if data.max_rows:
        picked = picked[:data.max_rows]
    return RowPlan(tables, picked, data)


@dataclass
class RowPlan:
    """The rows a config picks from its files, in order, as (table number, row index) pairs;
    picklable (a table re-opens its file where it is unpickled)."""

    tables: list[_Table]
    picked: list[tuple[int, int]]
    data: DataConfig

    def __len__(self) -> int:
        return len(self.picked)

    def rows(self, start: int, end: int) -> list[tuple[str, dict[str, Any]]]:
        """Rows [start, end) of the plan as (where, sample), mapped by `data`'s keys; a
        DatasetError names the file and row of a row that cannot be mapped."""
        out = []
        for t, row, i in _fetch([(self.tables[t], i) for t, i in self.picked[start:end]]):
            where = t.where(i)
            out.append((where, _sample(row, where, self.data)))
        return out


def resolve_data_path(path: str, key: str) -> str:
    """A file or directory for the config value `path`; a named data set (DATA_ASSETS) is
    converted once into the parkrl cache ($PARKRL_CACHE, default ~/.cache/parkrl) and its
    cached JSONL returned."""
    if path in DATA_ASSETS and not Path(path).exists():
        return str(cached_asset(path, key))
    return path


SPLITS = ("train", "test", "validation", "eval", "dev")
_SPLIT_ALIASES = {"val": "validation", "valid": "validation"}


def _split_of(relative: Path) -> str | None:
    """The data-set split a file's path names ("data/train-00000-of-00002.parquet" -> "train"),
    as the hub and `datasets` name them; None when it names none."""
    for word in re.split(r"[^a-z]+", relative.as_posix().lower()):
        word = _SPLIT_ALIASES.get(word, word)
        if word in SPLITS:
            return word
    return None


def _files(path: str, key: str) -> list[tuple[Path, str]]:
    """The files to read, each with the name errors show (a lone file: as the config gave it)."""
    given = resolve_data_path(path, key)
    resolved = Path(given).expanduser()
    suffixes = ", ".join(FORMATS)
    if resolved.is_dir():
        files = sorted(f for f in resolved.rglob("*") if f.is_file() and f.suffix in FORMATS
                       and not any(part.startswith(".") for part in f.relative_to(resolved).parts))
        if not files:
            found = sorted(f.name for f in resolved.iterdir())[:8]
            raise DatasetError(f"{key}={path!r}: the directory holds no {suffixes} files (found: "
                               f"{', '.join(found) or 'nothing'})")
        splits = {name: [f for f in files if _split_of(f.relative_to(resolved)) == name] for name in SPLITS}
        splits = {name: found for name, found in splits.items() if found}
        if len(splits) > 1:  # a hub snapshot: train and test side by side
            parts = "; ".join(f"{name}: {found[0].relative_to(resolved)}" + (f" (+{len(found) - 1})" if len(found) > 1 else "")
                              for name, found in splits.items())
            raise DatasetError(f"{key}={path!r}: the directory holds several splits ({parts}); reading them all would "
                               f"mix them. Give one split's file or subdirectory, e.g. {key}={files[0].parent}")
        return [(f, str(f)) for f in files]
    if not resolved.is_file():
        raise DatasetError(f"{key}={path!r}: no such file or directory (give a {suffixes} file, a directory of "
                           f"them, or a named data set: {', '.join(DATA_ASSETS)})")
    if resolved.suffix not in FORMATS:
        raise DatasetError(f"{key}={path!r}: unknown format {resolved.suffix or '(no suffix)'!r}; parkrl reads "
                           f"{suffixes} files (convert it, or rename it if it is one of these)")
    return [(resolved, given)]


class _Table:
    """One file's rows: a JSONL file as the byte offset and line number of each row (parsed when
    fetched), the others as a `datasets.Dataset` (memory-mapped Arrow)."""

    def __init__(self, file: Path, name: str, builder: str, rows: Any = None,
                 offsets: list[int] | None = None, lines: list[int] | None = None) -> None:
        self.path, self.file, self.builder = file, name, builder  # file: its name in messages
        self._rows, self.offsets, self.lines = rows, offsets, lines

    def __getstate__(self) -> dict[str, Any]:  # the Dataset is re-opened (from the cache) where unpickled
        return {**self.__dict__, "_rows": None if self.builder else self._rows}

    @property
    def rows(self) -> Any:
        if self._rows is None:
            self._rows = _load_dataset(self.path, self.file, self.builder)
        return self._rows

    def __len__(self) -> int:
        return len(self.lines) if self.lines is not None else len(self.rows)

    def where(self, i: int) -> str:
        return f"{self.file}:{self.lines[i]}" if self.lines is not None else f"{self.file} row {i}"

    def columns(self) -> list[str]:
        if self.lines is None:
            return list(self.rows.column_names)
        return sorted({k for row in self._jsonl_rows(range(len(self))) for k in row})

    def column(self, name: str) -> list[Any]:
        if self.lines is None:
            return self.rows.data.column(name).to_pylist()
        return [row.get(name) for row in self._jsonl_rows(range(len(self)))]

    def fetch(self, indices: list[int]) -> list[dict[str, Any]]:
        """Rows `indices` (sorted, distinct) as dicts."""
        if self.lines is not None:
            return self._jsonl_rows(indices)
        csv = self.builder == "csv"
        rows = self.rows.select(indices).to_list() if len(indices) < len(self) else self.rows.to_list()
        return [_from_table(row, csv) for row in rows]

    def _jsonl_rows(self, indices: Any) -> list[dict[str, Any]]:
        with open(self.path, "rb") as f:
            out = []
            for i in indices:
                f.seek(self.offsets[i])
                out.append(json.loads(f.readline()))
            return out


def _open(file: Path, name: str) -> _Table:
    builder = FORMATS[file.suffix]
    if not builder:
        return _index_jsonl(file, name)
    if builder == "parquet":
        import pyarrow.parquet as pq

        try:
            empty = pq.read_metadata(file).num_rows == 0  # datasets fails on these; they are just empty
        except Exception:  # noqa: BLE001 - reported by _load_dataset below
            empty = False
        if empty:
            return _Table(file, name, "", offsets=[], lines=[])
    return _Table(file, name, builder, _load_dataset(file, name, builder))


def _load_dataset(file: Path, name: str, builder: str) -> Any:
    import datasets

    log, bars = logging.getLogger("datasets"), datasets.utils.are_progress_bars_disabled()
    level = log.level
    log.setLevel(logging.CRITICAL)  # its own report of a bad file; ours below names the fix
    datasets.disable_progress_bars()
    try:
        return datasets.load_dataset(builder, data_files=str(file), split="train")
    except Exception as e:  # noqa: BLE001 - pyarrow and datasets raise many types for a bad file
        cause = e.__cause__ or e
        detail = (str(cause).strip().splitlines() or [type(cause).__name__])[0][:300]
        raise DatasetError(f"{name}: cannot be read as {builder} ({type(cause).__name__}: {detail}); check that "
                           f"the file is complete and really {builder}") from None
    finally:
        log.setLevel(level)
        if not bars:
            datasets.enable_progress_bars()


def _index_jsonl(file: Path, name: str) -> _Table:
    """Each row's byte offset and line number; every line is parsed once here to check it."""
    offsets, lines = array("q"), array("q")
    with open(file, "rb") as f:
        offset = 0
        for line_no, line in enumerate(f, 1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            where = f"{name}:{line_no}"
            try:
                row = json.loads(line)
            except UnicodeDecodeError as e:
                raise DatasetError(f"{where}: not UTF-8 text ({e.reason} at byte {e.start})") from None
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            offsets.append(start)
            lines.append(line_no)
    return _Table(file, name, "", offsets=offsets, lines=lines)


def _fetch(picked: list[tuple[_Table, int]]) -> list[tuple[_Table, dict[str, Any], int]]:
    """The picked rows as dicts, in order; each file's rows are read in one go."""
    wanted: dict[int, set[int]] = {}
    tables = {}
    for t, i in picked:
        wanted.setdefault(id(t), set()).add(i)
        tables[id(t)] = t
    got: dict[tuple[int, int], dict[str, Any]] = {}
    for key, t in tables.items():
        indices = sorted(wanted[key])
        got.update({(key, i): row for i, row in zip(indices, t.fetch(indices))})
    return [(t, got[(id(t), i)], i) for t, i in picked]


def _from_table(row: dict[str, Any], csv: bool) -> dict[str, Any]:
    """A table row as a JSONL row would be: a null cell is a None field (reported as empty), and
    in a CSV file a float that is a whole number is an int (a CSV integer column with a gap
    reads as floats; Parquet and Arrow keep their types, as JSONL does)."""
    return {k: int(v) if csv and isinstance(v, float) and v.is_integer() else v for k, v in row.items()}


def _field(row: dict[str, Any], key: str) -> Any:
    """`row[key]`, or for a dotted key without such a field the nested value ("a.b" -> row["a"]["b"]);
    None when absent."""
    if key in row:
        return row[key]
    value: Any = row
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _is_chat(value: Any) -> bool:
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in value))


def _suggest(present: list[str], names: tuple[str, ...], taken: set[str]) -> str | None:
    return next((n for n in names if n in present and n not in taken), None)


def _sample(row: dict[str, Any], where: str, data: DataConfig) -> dict[str, Any]:
    present = sorted(k for k, v in row.items() if v is not None)
    answer = _field(row, data.answer_key)
    if answer is None and data.answer_key in row:
        raise DatasetError(f"{where}: the {json.dumps(data.answer_key)} field is empty (null); fill it in, or leave "
                           f"such rows out (data.filter, or drop them from the file)")
    if answer is None:
        close = _suggest(present, ANSWER_FIELDS, {data.prompt_key, data.messages_key})
        fix = (f"set data.answer_key={close}" if close else
               "set data.answer_key to the field that holds the reference answer")
        raise DatasetError(f"{where}: missing field {json.dumps(data.answer_key)} (fields present: {present}); {fix}")
    messages = _field(row, data.messages_key)
    prompt = _field(row, data.prompt_key)
    if messages is None and _is_chat(prompt):
        messages = prompt  # verl-style files keep the chat in "prompt"
    if messages is not None:
        if not _is_chat(messages):
            raise DatasetError(f"{where}: {json.dumps(data.messages_key)} must be a non-empty list of "
                               f"{{\"role\", \"content\"}} objects; set data.messages_key to a chat-list field, or "
                               f"leave it unset in the data and use data.prompt_key for a text prompt")
        question = messages[-1]["content"]
    elif isinstance(prompt, str):
        question = prompt
        messages = [{"role": "user", "content": question}]
        if data.system_prompt:
            messages.insert(0, {"role": "system", "content": data.system_prompt})
    else:
        taken = {data.answer_key}
        close = _suggest(present, PROMPT_FIELDS, taken)
        chat = _suggest([k for k in present if _is_chat(row[k])], MESSAGES_FIELDS, taken)
        fix = (f"set data.prompt_key={close}" if close else f"set data.messages_key={chat}" if chat else
               "set data.prompt_key (a text field) or data.messages_key (a chat list) to one of them")
        got = "" if prompt is None else f"; {json.dumps(data.prompt_key)} is a {type(prompt).__name__}, not text"
        raise DatasetError(f"{where}: missing field {json.dumps(data.prompt_key)} (a string) or "
                           f"{json.dumps(data.messages_key)} (fields present: {present}){got}; {fix}")
    fields = {k: v for k, v in row.items() if v is not None}  # an empty cell is an absent field downstream
    return {**fields, "question": question, "answer": str(answer), "messages": messages}


def _text(value: Any) -> str:
    """How a cell compares with a `data.filter` value: as text, true/false for booleans, a
    whole-number float as an integer (2.0 -> "2")."""
    if isinstance(value, bool):
        return str(value).lower()
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


@dataclass
class RowFilter:
    """`data.filter`: COLUMN=VALUE, COLUMN!=VALUE, COLUMN in [V1, V2, ...] or COLUMN not in
    [...]. Cells and values compare as text (a number column matches "level=2"); quotes around
    a value are dropped. A row without the column does not match COLUMN=... or COLUMN in [...]."""

    column: str
    values: tuple[str, ...]
    negate: bool

    _SYNTAX = re.compile(r"^\s*([^\s=!\[\]]+)\s*(?:(!=|==|=)|\s(not\s+in|in)\s)\s*(.*?)\s*$", re.S)

    @classmethod
    def parse(cls, text: str) -> RowFilter:
        m = cls._SYNTAX.match(text)
        listed = m and m.group(3)
        if not m or not m.group(4) or (listed and not (m.group(4).startswith("[") and m.group(4).endswith("]"))):
            raise ConfigError(f"data.filter={text!r}: write COLUMN=VALUE, COLUMN!=VALUE or COLUMN in [V1, V2] (e.g. "
                              f"\"level=easy\" or \"level in [1, 2]\"; on the command line quote it: "
                              f"'data.filter=\"level in [1, 2]\"')")
        raw = [v for v in m.group(4)[1:-1].split(",")] if listed else [m.group(4)]
        values = tuple(v.strip().strip("'\"") for v in raw if v.strip())
        return cls(m.group(1), values, (m.group(2) or m.group(3)).startswith(("!", "not")))

    def column_of(self, table: _Table) -> list[Any]:
        """The filter column's cells in `table`; a DatasetError when the file has no such column."""
        columns = table.columns()
        if self.column not in columns:
            raise DatasetError(f"data.filter: {table.file} has no column {self.column!r} (columns: "
                               f"{', '.join(columns)}); filter on one of them")
        return table.column(self.column)

    def matches(self, value: Any) -> bool:
        return (value is not None and _text(value) in self.values) != self.negate


def write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    """`rows` (any iterable: written as they come) as JSON lines at `path` (what this module
    reads), written atomically; returns how many."""
    count = 0
    with _atomic(path) as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False, default=str) + "\n").encode())
            count += 1
    return count


def atomic_write(path: Path, data: bytes) -> None:
    """`data` at `path` via a temporary file in the same folder, fsynced and renamed: a reader
    (or a rerun after a kill) sees the whole file or none of it."""
    with _atomic(path) as f:
        f.write(data)


@contextmanager
def _atomic(path: Path) -> Iterator[BinaryIO]:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
