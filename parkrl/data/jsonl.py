"""Samples from your own JSONL files: one {"question" or "messages", "answer", ...} per line."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from parkrl.config import ConfigError


class DatasetError(ConfigError):
    """A dataset file that cannot be used; the message names the file and the line."""


def read_samples(path: str, key: str, system_prompt: str) -> list[dict[str, Any]]:
    """Every line of `path` as a sample. A row needs "answer" and either "question" (a string,
    sent as the user turn after `system_prompt`) or "messages" (a chat list, sent as is); other
    fields are kept for the reward function. `key` is the config key that named the file."""
    return [sample for _, sample in read_rows(path, key, system_prompt)]


def read_rows(path: str, key: str, system_prompt: str) -> list[tuple[str, dict[str, Any]]]:
    """`read_samples`, each sample with where it came from ("path:line")."""
    file = Path(path)
    if not file.is_file():
        raise DatasetError(f"{key}={path!r}: no such file")
    out = []
    with open(file, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{where}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
            out.append((where, _sample(row, where, system_prompt)))
    if not out:
        raise DatasetError(f"{key}={path!r}: the file has no rows")
    return out


def _sample(row: dict[str, Any], where: str, system_prompt: str) -> dict[str, Any]:
    if "answer" not in row:
        raise DatasetError(f"{where}: missing field \"answer\" (fields present: {sorted(row)})")
    if "messages" in row:
        messages = row["messages"]
        if not (isinstance(messages, list) and messages
                and all(isinstance(m, dict) and {"role", "content"} <= set(m) for m in messages)):
            raise DatasetError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
        question = messages[-1]["content"]
    elif isinstance(row.get("question"), str):
        question = row["question"]
        messages = [{"role": "user", "content": question}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
    else:
        raise DatasetError(f"{where}: missing field \"question\" (a string) or \"messages\" (fields present: {sorted(row)})")
    return {**row, "question": question, "answer": str(row["answer"]), "messages": messages}
