"""One-line checks of config fields, for the examples' ``validate_config``.

An example checks what only it knows (its data sets, models, sizes, learning
rates); flax_pc checks its own arguments when the state is built
(``workdir.config_errors``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import ml_collections


class ConfigError(ValueError):
    """A config field has a bad value."""


def is_int(value: Any) -> bool:
    """An int, and not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """An int or a float, and not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class FieldChecker:
    """Checks fields of one config; each failed check raises :class:`ConfigError`.

    Every check takes one or more field names, checked in order.
    """

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def check(self, name: str, ok: bool, expected: str) -> None:
        """Raises ``config.<name> = <value>: expected <expected>.`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"config.{name} = {self.config[name]!r}: expected {expected}.")

    def _each(self, names: Iterable[str], ok: Any, expected: str) -> None:
        for name in names:
            self.check(name, ok(self.config[name]), expected)

    def positive_int(self, *names: str) -> None:
        self._each(names, lambda v: is_int(v) and v > 0, "an int > 0")

    def non_negative_int(self, *names: str) -> None:
        self._each(names, lambda v: is_int(v) and v >= 0, "an int >= 0")

    def positive_float(self, *names: str) -> None:
        self._each(names, lambda v: is_number(v) and math.isfinite(v) and v > 0, "a number > 0")

    def non_negative_float(self, *names: str) -> None:
        self._each(names, lambda v: is_number(v) and math.isfinite(v) and v >= 0, "a number >= 0")

    def fraction(self, *names: str) -> None:
        """Numbers in [0, 1), e.g. a momentum."""
        self._each(names, lambda v: is_number(v) and 0 <= v < 1, "a number in [0, 1)")

    def one_of(self, name: str, choices: Iterable[Any]) -> None:
        choices = tuple(choices)
        self.check(name, self.config[name] in choices, f"one of {choices}")

    def path(self, *names: str) -> None:
        """``None`` or a string."""
        self._each(names, lambda v: v is None or isinstance(v, str), "a path (or None)")

    def data_fields(self, datasets: Iterable[str]) -> None:
        """The fields both examples load their data with: dataset, data_dir, synthetic sizes."""
        self.one_of("dataset", datasets)
        self.path("data_dir")
        self.positive_int("synthetic_train_size", "synthetic_test_size")

    def sizes(self, name: str, required: bool = True) -> None:
        """A tuple of ints > 0, non-empty when ``required``."""
        value = self.config[name]
        ok = isinstance(value, (tuple, list)) and all(is_int(v) and v > 0 for v in value)
        expected = "a non-empty tuple of ints > 0" if required else "a tuple of ints > 0"
        self.check(name, ok and (bool(value) or not required), expected)

    def requires(self, name: str, ok: bool, why: str) -> None:
        """Raises ``config.<name> = <value> <why>.`` unless ``ok``: a field that needs others."""
        if not ok:
            raise ConfigError(f"config.{name} = {self.config[name]!r} {why}.")
