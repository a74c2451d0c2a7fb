"""`parkrl.run(...)`: the Python entry point for notebooks and scripts, the same run as
`python -m parkrl.train recipe=... key=value ...` with the reward and the data given as objects.

    import parkrl

    def reward(completions, samples):
        return [1.0 if s["answer"] in c else 0.0 for c, s in zip(completions, samples)]

    out = parkrl.run(recipe="grpo", overrides=["trainer.total_steps=20"], reward=reward,
                     train_data=[{"question": "2 + 3?", "answer": "5"}, ...], eval_data="eval.jsonl")

The reward function and the data stay in this process: the controller, which runs here, scores
every batch and feeds the prompts, so a function defined in a notebook works as it is (nothing
is imported by name; Ray workers only generate and train). Rows given as objects are written
once to `<trainer.output_dir>/data/{train,eval}.jsonl` and read from there like any
`data.train_file`, so the run's record is complete and `parkrl.run` again resumes it.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from parkrl.config import Config, ConfigError
from parkrl.data.files import write_jsonl
from parkrl.rewards.base import FunctionReward, RewardFunction

RewardLike = Union[RewardFunction, Callable[[list[str], list[dict[str, Any]]], Sequence[float]]]


def compose(recipe: str = "grpo", overrides: Iterable[str] = ()) -> Config:
    """The typed Config of `recipe` with Hydra `overrides` ("key=value" strings), composed and
    checked exactly as on the command line; a bad key or value is a ConfigError naming it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from parkrl.train import CONF_DIR, composition_error, to_config

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return to_config(hydra_compose(config_name="parkrl", overrides=[f"recipe={recipe}", *overrides]))
    except ConfigError:
        raise
    except Exception as e:
        message = composition_error(e)
        if message is None:
            raise
        raise ConfigError(message) from e


def run(recipe: str = "grpo", overrides: Iterable[str] = (), reward: RewardLike | None = None,
        train_data: Any = None, eval_data: Any = None) -> Path:
    """Train `recipe` with Hydra `overrides`; returns the output directory (trainer.output_dir).

    `reward`: a `parkrl.RewardFunction`, or a plain function `(completions, samples) ->
    list[float]` (samples: the rows, with "question", "answer" and your other fields). None:
    the recipe's `reward.cls`.
    `train_data` / `eval_data`: a path (JSONL, Parquet, CSV, Arrow, or a directory: as
    `data.train_file`), a list of dicts, or an HF `datasets.Dataset`. None: the recipe's data.
    Errors are raised as exceptions (ConfigError for bad input) rather than exit codes.
    """
    cfg = compose(recipe, overrides)
    out = Path(cfg.trainer.output_dir)
    if train_data is not None:
        cfg.data.train_file = data_file(train_data, out / "data" / "train.jsonl", "train_data")
    if eval_data is not None:
        cfg.data.eval_file = data_file(eval_data, out / "data" / "eval.jsonl", "eval_data")
    reward_fn = None
    if reward is not None:
        if isinstance(reward, type):
            raise ConfigError(f"reward={reward.__name__} is a class: pass an instance ({reward.__name__}(...)) or a "
                              f"function (completions, samples) -> list[float]")
        reward_fn = reward if isinstance(reward, RewardFunction) else FunctionReward(reward)
        cfg.reward.cls = describe(reward_fn.fn if isinstance(reward_fn, FunctionReward) else reward_fn)
    from parkrl.controller import train

    return train(cfg, reward_fn=reward_fn)


def describe(obj: Any) -> str:
    """"module.qualname" of a function, a class instance or a functools.partial, as config.json
    records the reward a run used (`reward.cls`)."""
    target = getattr(obj, "func", obj)  # a partial: the function it wraps
    if not hasattr(target, "__qualname__"):  # an instance: its class
        target = type(target)
    return f"{getattr(target, '__module__', '?')}.{target.__qualname__}"


def data_file(data: Any, path: Path, name: str) -> str:
    """`data` as a file the run reads: a path as it is; rows (a list of dicts or an HF Dataset)
    written as JSONL to `path` (line k + 1 is row k, so reader errors point at `name`[k])."""
    if isinstance(data, (str, Path)):
        return str(data)
    if isinstance(data, Mapping) or not isinstance(data, Iterable):
        raise ConfigError(f"{name}: give a path, a list of dicts or a datasets.Dataset, not a {type(data).__name__}")
    rows = []
    for k, row in enumerate(data):
        if not isinstance(row, Mapping):
            raise ConfigError(f"{name}[{k}] is a {type(row).__name__}; each row must be a dict such as "
                              f"{{'question': ..., 'answer': ...}}")
        rows.append(dict(row))
    if not rows:
        raise ConfigError(f"{name} is empty: give at least one row")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_jsonl(path, rows)
    return str(path)
