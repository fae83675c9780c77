"""Package names loaded on first use (PEP 562), for packages whose public names are costly to load.

Importing a package runs its ``__init__``; when that imports every module it names, the cheapest
submodule costs as much as the whole package (``airbyte_fleet.simulator`` would load the client,
the CLI's parser the worker's HTTP server). Stdlib only, so it costs nothing itself.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for *package* that imports each name of *homes* (name -> the module
    that defines it) when it is first asked for."""

    def __getattr__(name: str) -> Any:
        module = homes.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    return __getattr__
