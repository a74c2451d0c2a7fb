"""Name -> function registries, so users add estimators and losses without touching parkrl."""
from __future__ import annotations

from typing import Any, Callable, TypeVar

F = TypeVar("F", bound=Callable)


class Registry:
    """A named table of functions of one kind (e.g. "advantage").

    >>> @ADVANTAGES.register("my_estimator")
    ... def my_estimator(rewards, group_ids, cfg): ...
    """

    def __init__(self, kind: str, config_key: str, traits: dict[str, Any] | None = None) -> None:
        """`traits`: what each entry may declare when registered, with the defaults (e.g. an
        estimator's level); read back with `trait`."""
        self.kind = kind
        self.config_key = config_key
        self._table: dict[str, Callable] = {}
        self._defaults = dict(traits or {})
        self._traits: dict[str, dict[str, Any]] = {}

    def register(self, name: str, **traits: Any) -> Callable[[F], F]:
        """Decorator that registers a function under `name` (names are unique), with the traits
        it declares (the others keep their defaults)."""
        unknown = sorted(set(traits) - set(self._defaults))
        if unknown:
            raise TypeError(f"{self.kind} {name!r}: unknown traits {unknown}; known: {sorted(self._defaults)}")

        def add(fn: F) -> F:
            if name in self._table and self._table[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._table[name] = fn
            self._traits[name] = {**self._defaults, **traits}
            return fn

        return add

    def trait(self, name: str, key: str) -> Any:
        """What entry `name` declared for `key` (its default if nothing); an unknown name fails
        listing what is registered."""
        self.get(name)
        return self._traits[name][key]

    def names_with(self, key: str) -> tuple[str, ...]:
        """The entries whose trait `key` is true."""
        return tuple(sorted(n for n, t in self._traits.items() if t[key]))

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
