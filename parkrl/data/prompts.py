"""The prompt stream of a run: a shuffled training sampler and a disjoint held-out eval set."""
from __future__ import annotations

import random
from typing import Any

from parkrl.config import ConfigError, DataConfig
from parkrl.data.files import DatasetError, read_rows
from parkrl.data.reasoning_gym import task_samples


def identity(sample: dict[str, Any]) -> str:
    """What makes two samples the same task: their `uid` if they carry one, else the question."""
    return str(sample["uid"]) if "uid" in sample else sample["question"]


class TaskPrompts:
    """Training and eval samples from `data.train_file`/`data.eval_file` when set, else from
    the reasoning-gym task `data.task` (train from `data.train_seed`, eval from `data.eval_seed`).
    Without `data.eval_file` (allowed when `trainer.eval_every=0`) the eval set is empty.

    Held-out means disjoint: every eval sample is removed from the training pool (small
    generator spaces repeat questions across seeds), and the eval set has no duplicates. Samples
    are told apart by their `uid` field when they have one (tasks whose question repeats over
    different inputs, like terminal_files), else by their question text.
    `train_where`/`eval_where` say where each sample came from (file:line, file row N, or task
    sample). Files are read by `parkrl.data.files.read_rows` (formats, field keys, data.filter,
    data.shuffle seeded by data.train_seed / data.eval_seed, data.max_rows).
    """

    def __init__(self, cfg: DataConfig, shuffle_seed: int) -> None:
        if cfg.train_file:
            pool = read_rows(cfg.eval_file, "data.eval_file", cfg, cfg.eval_seed) if cfg.eval_file else []
            train = read_rows(cfg.train_file, "data.train_file", cfg, cfg.train_seed)
            source = f"data.train_file={cfg.train_file!r}"
        else:
            pool = task_rows(cfg, "eval", cfg.eval_size * 4)
            train = task_rows(cfg, "train", cfg.train_size)
            source = f"data.task={cfg.task!r}"
        seen: set[str] = set()
        self.eval: list[dict[str, Any]] = []
        self.eval_where: list[str] = []
        for where, s in pool:
            if identity(s) not in seen and len(self.eval) < cfg.eval_size:
                seen.add(identity(s))
                self.eval.append(s)
                self.eval_where.append(where)
        kept = [(where, s) for where, s in train if identity(s) not in seen]
        self.train = [s for _, s in kept]
        self.train_where = [where for where, _ in kept]
        self.excluded = len(train) - len(self.train)
        if not self.train:
            raise ConfigError(
                f"{source}: every training question is also an eval question; "
                f"use more training questions or lower data.eval_size"
            )
        self._rng = random.Random(shuffle_seed)
        self._order = list(range(len(self.train)))
        self._rng.shuffle(self._order)
        self._cursor = 0

    def state_dict(self) -> dict[str, Any]:
        """The sampler's position (order, cursor, RNG), JSON-serialisable, for checkpoints."""
        version, internal, gauss = self._rng.getstate()
        return {"order": list(self._order), "cursor": self._cursor, "rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a `state_dict()` of a sampler over the same training pool."""
        if len(state["order"]) != len(self._order):
            raise ConfigError(
                f"the checkpoint's sampler covers {len(state['order'])} training questions, this run has "
                f"{len(self._order)}: data.* differs from the checkpointed run"
            )
        version, internal, gauss = state["rng"]
        self._rng.setstate((version, tuple(internal), gauss))
        self._order, self._cursor = list(state["order"]), int(state["cursor"])

    def next_prompts(self, k: int) -> list[dict[str, Any]]:
        """The next `k` training samples (the stream reshuffles after each pass)."""
        out = []
        for _ in range(k):
            if self._cursor == len(self._order):
                self._rng.shuffle(self._order)
                self._cursor = 0
            out.append(self.train[self._order[self._cursor]])
            self._cursor += 1
        return out


def task_rows(cfg: DataConfig, split: str, size: int) -> list[tuple[str, dict[str, Any]]]:
    """`size` samples of data.task for `split` "train" (data.train_seed, data.task_args) or "eval"
    (data.eval_seed, data.task_args updated by data.eval_task_args), each with where it came from."""
    seed = cfg.train_seed if split == "train" else cfg.eval_seed
    args = dict(cfg.task_args) if split == "train" else {**cfg.task_args, **cfg.eval_task_args}
    samples = task_samples(cfg.task, args, seed, size, cfg.system_prompt)
    return [(f"data.task={cfg.task!r} sample {i} (data.{split}_seed={seed})", s) for i, s in enumerate(samples)]


def check_prompt_lengths(data: TaskPrompts, tokenizer, max_new_tokens: int, max_model_len: int,
                         shown: int = 5) -> None:
    """Every train and eval prompt, chat-templated as the engines get it, plus `max_new_tokens`
    must fit the engines' context `max_model_len`; else a DatasetError naming the rows (file and
    line, or task sample) and the keys to change. Checked when the data loads, so a too-long
    prompt never reaches an engine."""
    room = max_model_len - max_new_tokens
    over = [*prompts_too_long(tokenizer, data.train, data.train_where, room),
            *prompts_too_long(tokenizer, data.eval, data.eval_where, room)]
    if over:
        raise prompt_length_error(over, max_new_tokens, max_model_len, shown)


def prompts_too_long(tokenizer, samples: list[dict], wheres: list[str], room: int) -> list[tuple[str, int]]:
    """(where, prompt tokens) of the samples whose chat-templated prompt has more than `room`
    tokens. Only prompts whose rendered text has more UTF-8 bytes than the room are tokenized (a
    token covers at least one byte), so long datasets check fast."""
    from parkrl.models import chat_prompt_ids

    if not samples:
        return []
    try:
        texts = tokenizer.apply_chat_template([s["messages"] for s in samples], add_generation_prompt=True,
                                              tokenize=False)
    except ValueError as e:  # e.g. a base model without a chat template
        raise ConfigError(f"model.path: its tokenizer cannot format chat prompts ({e}); parkrl sends prompts as "
                          f"chat messages, so use an instruct/chat model or add a chat template") from None
    over = []
    for where, sample, text in zip(wheres, samples, texts):
        if len(text.encode("utf-8")) + 1 > room:
            n = len(chat_prompt_ids(tokenizer, sample["messages"]))
            if n > room:
                over.append((where, n))
    return over


def prompt_length_error(over: list[tuple[str, int]], max_new_tokens: int, max_model_len: int,
                        shown: int = 5) -> DatasetError:
    """The error for the prompts `prompts_too_long` found."""
    room = max_model_len - max_new_tokens
    lines = "\n  - ".join(f"{where}: {n} prompt tokens" for where, n in over[:shown])
    more = f"\n  ... {len(over) - shown} more" if len(over) > shown else ""
    return DatasetError(
        f"{len(over)} prompt(s) do not fit the engine's context: prompt tokens (chat-templated) + "
        f"rollout.max_new_tokens={max_new_tokens} must be <= rollout.max_model_len={max_model_len}, so at most "
        f"{room} prompt tokens:\n  - {lines}{more}\n"
        f"Shorten or drop those rows, raise rollout.max_model_len (engine memory: rollout.kv_cache_gib), "
        f"or lower rollout.max_new_tokens"
    )
