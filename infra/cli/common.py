"""What every command group shares: the one-line failure and the key/value output."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any, TypeAlias

from infra.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]
# the `sub` of the parser, to which each command group adds its commands
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    """A failure worth one line to the operator (exit 1)."""


def emit(data: dict[str, Any], as_json: bool, title: str = "") -> None:
    if as_json:
        print(json.dumps(data, sort_keys=False, default=str))
        return
    if title:
        print(title)
    width = max((len(k) for k in data), default=0)
    for key, value in data.items():
        if isinstance(value, float):
            value = f"{value:,.3f}" if abs(value) < 100 else f"{value:,.0f}"
        print(f"  {key:<{width}}  {value}")
