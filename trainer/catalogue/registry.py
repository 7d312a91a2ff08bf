"""The one registry style of the catalogue (no TensorFlow).

- ``Registry``: name -> entry with aliases; ``get(name, key)`` raises a ConfigError naming the key,
  the value, the valid names and the closest one.
- ``closest`` / ``unknown_choice_message``: the one "did you mean".
- ``check_parameters`` and ``construct``: build an entry with the configured parameters, or say
  which parameter is wrong and what the entry takes.
"""
from __future__ import annotations

import difflib
from typing import Any, Callable, Generic, Iterable, Mapping, Sequence, TypeVar

from trainer.errors import ConfigError

T = TypeVar("T")


def closest(value: str, choices: Iterable[str]) -> str | None:
    """The valid choice that looks most like ``value``, or None when nothing is close."""
    matches = difflib.get_close_matches(str(value), list(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_choice_message(key: str, value: object, choices: Iterable[str]) -> str:
    """One sentence: the key, the value received, the valid choices and the closest one."""
    choices = sorted(set(choices))
    message = f"{key}: unknown value {value!r}; valid: {', '.join(choices)}"
    suggestion = closest(str(value), choices)
    if suggestion is not None:
        message += f" (did you mean {suggestion!r}?)"
    return message


class Registry(Generic[T]):
    """A catalogue of named entries; aliases resolve to the same entry."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._aliases: dict[str, str] = {}

    def register(self, name: str, entry: T, aliases: Iterable[str] = ()) -> T:
        self._entries[name] = entry
        for alias in aliases:
            self._aliases[alias] = name
        return entry

    def canonical(self, name: str) -> str | None:
        key = str(name).lower()
        if key in self._entries:
            return key
        return self._aliases.get(key)

    def names(self, with_aliases: bool = True) -> list[str]:
        names = list(self._entries)
        if with_aliases:
            names += list(self._aliases)
        return sorted(names)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.canonical(name) is not None

    def get(self, name: str, key: str | None = None) -> T:
        """The entry for ``name``; a ConfigError naming ``key`` and the valid names otherwise."""
        canonical = self.canonical(name) if isinstance(name, str) else None
        if canonical is None:
            raise ConfigError(unknown_choice_message(key or self.kind, name, self.names()))
        return self._entries[canonical]

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())


def unknown_parameter(key: str, name: str, valid: Sequence[str], what: str) -> str:
    """One problem: ``what`` takes no parameter ``name``, the closest valid one, and what it takes."""
    hint = closest(str(name), valid)
    return (
        f"{key}.{name}: {what} takes no parameter {name!r}"
        + (f" (did you mean {hint!r}?)" if hint else "")
        + f"; it takes: {', '.join(valid) or 'none'}"
    )


def check_parameters(params: Mapping[str, Any] | Iterable[str], valid: Sequence[str], key: str, what: str) -> None:
    """Refuse parameters ``what`` does not take: one problem per wrong name, each with its closest valid name."""
    problems = [unknown_parameter(key, name, valid, what) for name in params if name not in valid]
    if problems:
        raise ConfigError(f"{key}: unknown parameter{'s' if len(problems) > 1 else ''} for {what}", problems=problems)


def construct(factory: Callable[..., T], params: Mapping[str, Any], key: str, what: str, shown: Mapping[str, Any] | None = None) -> T:
    """``factory(**params)``; a value the factory refuses becomes a ConfigError naming ``key``, ``what`` and the parameters."""
    try:
        return factory(**params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{key}: {what} refused its parameters {dict(shown if shown is not None else params)}: {exc}") from None
