"""Name -> function registries, so users add estimators and losses without touching parkrl."""
from __future__ import annotations

from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable)


class Registry:
    """A named table of functions of one kind (e.g. "advantage").

    >>> @ADVANTAGES.register("my_estimator")
    ... def my_estimator(rewards, group_ids, cfg): ...
    """

    def __init__(self, kind: str, config_key: str) -> None:
        self.kind = kind
        self.config_key = config_key
        self._table: dict[str, Callable] = {}

    def register(self, name: str) -> Callable[[F], F]:
        """Decorator that registers a function under `name` (names are unique)."""

        def add(fn: F) -> F:
            if name in self._table and self._table[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._table[name] = fn
            return fn

        return add

    def get(self, name: str) -> Callable:
        """The function registered as `name`; the error lists what is registered."""
        try:
            return self._table[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r} (config key {self.config_key}); "
                f"registered: {', '.join(sorted(self._table))}"
            ) from None

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(self._table))
