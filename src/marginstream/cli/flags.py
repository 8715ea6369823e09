"""Command-line flags that take a worker setting: its own parsing and range (the table of
stream/bounds.py), so that a command refuses what the workers would, as argparse does
(exit 2, naming the flag)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from typing import Any

from marginstream.stream.bounds import Setting


def range_words(setting: Setting, flags: Iterable[Setting] = ()) -> str:
    """The range in words, naming the other settings that are flags too by their flags."""
    words = setting.range
    for other in flags:
        words = words.replace(other.variable, other.flag)
    return words


def setting_type(setting: Setting, flags: Iterable[Setting] = ()) -> Any:
    """argparse's type for a flag taking setting."""
    flags = tuple(flags)

    def parse(raw: str) -> Any:
        try:
            return setting.value_of(raw)
        except ValueError as error:
            words = range_words(setting, flags)
            raise argparse.ArgumentTypeError(f"{error}: must be {words}") from None

    parse.__name__ = setting.field  # argparse names the type in some messages
    return parse
