"""``depmodules``: modules the worker imports and binds before each call.

On the client, :func:`describe_depmodules` turns the modules given to ``compute_this``
(module objects or dotted names) into the request's spec: a tuple of
``(module_name, alias_names)``. The alias names are every name under which
the function's globals refer to that module object (``import numpy as np``
gives ``("numpy", ("np",))``).

In the worker, :func:`bind_depmodules` imports each module and binds it in the
function's globals the way ``import a.b`` would (the top-level package ``a``
under its own name) and under every alias name.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Iterable, MutableMapping
from typing import Any

from ._codec import DepModules


def describe_depmodules(function: Any, depmodules: Iterable[types.ModuleType | str]) -> DepModules:
    """Builds the request's depmodules spec on the client side."""
    if isinstance(depmodules, str | types.ModuleType):
        depmodules = (depmodules,)
    function_globals = getattr(function, "__globals__", {})
    spec = []
    for entry in depmodules:
        if isinstance(entry, types.ModuleType):
            module: types.ModuleType | None = entry
            name = entry.__name__
        elif isinstance(entry, str) and entry.strip():
            name = entry.strip()
            module = sys.modules.get(name)
        else:
            raise TypeError(
                f"depmodules entries must be modules or module names, not {entry!r}; "
                "pass e.g. depmodules=[time, 'numpy']"
            )
        aliases = ()
        if module is not None:
            aliases = tuple(
                sorted(
                    global_name
                    for global_name, value in function_globals.items()
                    if value is module and global_name != name.partition(".")[0]
                )
            )
        spec.append((name, aliases))
    return tuple(spec)


def bind_depmodules(function_globals: MutableMapping[str, Any], spec: DepModules) -> None:
    """Imports each module of ``spec`` and binds it into ``function_globals``."""
    for name, aliases in spec:
        module = importlib.import_module(name)
        top_level = name.partition(".")[0]
        function_globals[top_level] = sys.modules[top_level]
        for alias in aliases:
            function_globals[alias] = module
