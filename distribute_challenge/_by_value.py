"""Which modules' functions and classes travel by value rather than by name.

cloudpickle pickles a function from an importable module by reference (module
and name), which the worker then imports. A function from a module that the
worker cannot import (a test module, a user script run as a module, any file
that is not installed) must travel by value instead. The rule: a module is
pickled by reference when it is built in, lives under the interpreter's
prefixes (the standard library, site-packages), or belongs to an installed
distribution (editable installs included); any other module is registered
with ``cloudpickle.register_pickle_by_value``. ``__main__`` is always pickled
by value by cloudpickle itself.
"""

from __future__ import annotations

import functools
import os
import site
import sys
import sysconfig

import cloudpickle


def pickle_module_by_value_if_needed(module_name: str | None) -> None:
    """Registers ``module_name`` for pickling by value unless the worker can import it."""
    if not module_name or module_name == "__main__":
        return
    module = sys.modules.get(module_name)
    if module is None or _is_importable_everywhere(module_name, getattr(module, "__file__", None)):
        return
    cloudpickle.register_pickle_by_value(module)


@functools.cache
def _is_importable_everywhere(module_name: str, file: str | None) -> bool:
    if file is None:
        return True
    if module_name.partition(".")[0] in _installed_top_level_names():
        return True
    path = os.path.realpath(file)
    return any(path.startswith(root + os.sep) for root in _installed_roots())


@functools.cache
def _installed_roots() -> tuple[str, ...]:
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            roots.add(path)
    return tuple(os.path.realpath(root) for root in roots if root)


@functools.cache
def _installed_top_level_names() -> frozenset[str]:
    import importlib.metadata  # only when a function is first pickled: slow to import

    return frozenset(importlib.metadata.packages_distributions())
