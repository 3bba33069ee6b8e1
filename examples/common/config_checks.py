"""One-line checks of config fields, shared by the examples' ``validate_config``."""

from __future__ import annotations

import math
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
    """Checks fields of one config; each failed check raises :class:`ConfigError`."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config

    def check(self, name: str, ok: bool, expected: str) -> None:
        """Raises ``config.<name> = <value>: expected <expected>.`` unless ``ok``."""
        if not ok:
            raise ConfigError(f"config.{name} = {self.config[name]!r}: expected {expected}.")

    def positive_int(self, name: str) -> None:
        value = self.config[name]
        self.check(name, is_int(value) and value > 0, "an int > 0")

    def positive_float(self, name: str) -> None:
        value = self.config[name]
        self.check(name, is_number(value) and math.isfinite(value) and value > 0, "a number > 0")

    def non_negative_int(self, name: str) -> None:
        value = self.config[name]
        self.check(name, is_int(value) and value >= 0, "an int >= 0")

    def non_negative_float(self, name: str) -> None:
        value = self.config[name]
        self.check(name, is_number(value) and math.isfinite(value) and value >= 0, "a number >= 0")

    def fraction(self, name: str) -> None:
        """A number in [0, 1), e.g. a momentum."""
        value = self.config[name]
        self.check(name, is_number(value) and 0 <= value < 1, "a number in [0, 1)")

    def one_of(self, name: str, choices: Any) -> None:
        self.check(name, self.config[name] in choices, f"one of {tuple(choices)}")

    def data_fields(self, datasets: Any) -> None:
        """The fields both examples load their data with: dataset, data_dir, synthetic sizes."""
        self.one_of("dataset", datasets)
        data_dir = self.config.data_dir
        self.check("data_dir", data_dir is None or isinstance(data_dir, str), "a path")
        self.positive_int("synthetic_train_size")
        self.positive_int("synthetic_test_size")

    def sizes(self, name: str, required: bool = True) -> None:
        """A tuple of ints > 0, non-empty when ``required``."""
        value = self.config[name]
        ok = isinstance(value, (tuple, list)) and all(is_int(v) and v > 0 for v in value)
        expected = "a non-empty tuple of ints > 0" if required else "a tuple of ints > 0"
        self.check(name, ok and (len(value) > 0 or not required), expected)
