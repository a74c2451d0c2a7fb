"""Loading user code named in the config: classes by import path (`reward.cls`, `env.cls`) and the
modules of `trainer.imports` (registrations of estimators, losses, ...). The one place user code is loaded."""
from __future__ import annotations

import importlib
from typing import Any

from parkrl.config import ConfigError


def load_subclass(cls_path: str, base: type, key: str) -> type:
    """The class at import path `cls_path` ("pkg.module.Class"), checked to subclass `base`;
    errors name the config `key`."""
    module_name, _, name = cls_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(f"{key}={cls_path!r}: cannot import it ({e}); give 'module.Class' on PYTHONPATH") from e
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{key}={cls_path!r} is not a subclass of parkrl.{base.__name__}")
    return cls


def instantiate(cls: type, args: dict[str, Any], key: str) -> Any:
    """`cls(**args)`; a signature mismatch names the config `key` that holds the arguments."""
    try:
        return cls(**args)
    except TypeError as e:
        raise ConfigError(f"{key} {dict(args)} do not fit {cls.__module__}.{cls.__name__}: {e}") from e


def import_plugins(modules: list[str]) -> None:
    """Import `trainer.imports` (user registrations of estimators, losses, ...) in this process."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            raise ConfigError(f"trainer.imports: cannot import {name!r} ({e}); is it on PYTHONPATH?") from e
