"""Procedural file-system tasks for shell agents (`data.task=terminal_files`).

Each sample carries a small directory tree (`sample["files"]`: path -> text) and a question
whose answer needs shell commands on that tree, e.g. "How many lines of logs/app.log contain
ERROR?" (`grep -c ERROR logs/app.log`, kept as `sample["check"]`). Answers are integers, checked by
`parkrl.rewards.MatchAnswerReward`. The sandbox environment (`parkrl.envs.SandboxEnvironment`)
writes the tree into the episode's sandbox session before the first turn.

Questions repeat across trees (the same wording over different files), so a sample's identity
is `sample["uid"]`, a hash of its question and tree: the eval set is made disjoint from
training by uid, not by question text.
"""
from __future__ import annotations

import hashlib
import json
import random
from typing import Any, Callable

LEVELS = ("INFO", "DEBUG", "WARN", "ERROR")
SERVICES = ("api", "db", "cache", "auth", "queue", "web")
EVENTS = ("request served", "connection reset", "retrying", "cache miss", "user login", "timeout", "job done",
          "disk check", "config loaded", "slow query")
WORDS = ("alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta")


def _log_line(rng: random.Random, level: str) -> str:
    return (f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
            f"{rng.randint(0, 59):02d} {level} {rng.choice(SERVICES)}: {rng.choice(EVENTS)}")


def count_matches(rng: random.Random) -> tuple[str, int, dict[str, str], str]:
    """Lines of a log that contain a level (grep -c)."""
    level = rng.choice(("ERROR", "WARN"))
    hits = rng.randint(1, 12)
    others = rng.randint(6, 24)
    lines = [_log_line(rng, level) for _ in range(hits)]
    lines += [_log_line(rng, rng.choice([x for x in LEVELS if x != level])) for _ in range(others)]
    rng.shuffle(lines)
    name = rng.choice(("app", "server", "worker", "backend"))
    path = f"logs/{name}.log"
    return f"How many lines of {path} contain {level}?", hits, {path: "\n".join(lines) + "\n"}, f"grep -c {level} {path}"


def count_files(rng: random.Random) -> tuple[str, int, dict[str, str], str]:
    """Files in a directory (ls | wc -l)."""
    folder = rng.choice(("reports", "data", "inbox", "archive"))
    n = rng.randint(2, 12)
    names = rng.sample([f"{w}_{k}.csv" for w in WORDS for k in range(10)], n)
    files = {f"{folder}/{name}": f"id,value\n{rng.randint(1, 99)},{rng.randint(1, 999)}\n" for name in names}
    files["README.txt"] = f"The {folder} folder holds exported tables.\n"
    return f"How many files are in the directory {folder}/?", n, files, f"ls {folder} | wc -l"


def line_count(rng: random.Random) -> tuple[str, int, dict[str, str], str]:
    """Lines of a text file (wc -l)."""
    name = rng.choice(("notes", "todo", "words", "names"))
    n = rng.randint(3, 40)
    path = f"docs/{name}.txt"
    text = "\n".join(rng.choice(WORDS) for _ in range(n)) + "\n"
    return f"How many lines does {path} have?", n, {path: text}, f"wc -l < {path}"


KINDS: dict[str, Callable[[random.Random], tuple[str, int, dict[str, str], str]]] = {
    "count_matches": count_matches, "count_files": count_files, "line_count": line_count,
}


def terminal_task_samples(seed: int, size: int, system_prompt: str = "",
                          kinds: list[str] | tuple[str, ...] = tuple(KINDS)) -> list[dict[str, Any]]:
    """`size` samples {"question", "answer", "files", "check", "uid", "messages"}, seeded, kinds in
    turn; "check" is a shell command whose output, run in the workspace, is the answer."""
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise ValueError(f"data.task_args.kinds={list(kinds)}: choose from {sorted(KINDS)}")
    rng = random.Random(seed)
    out = []
    for i in range(size):
        question, answer, files, check = KINDS[kinds[i % len(kinds)]](rng)
        uid = hashlib.sha1(json.dumps([question, files], sort_keys=True).encode()).hexdigest()[:16]
        messages = [{"role": "user", "content": question}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        out.append({"question": question, "answer": str(answer), "files": files, "check": check, "uid": uid, "messages": messages})
    return out
