"""mystic_native: the native core of mysticchallenge's Python side.

A Rust extension module (``native/`` in the repository, on the gateway's own
library), built into the same wheel as the gateway. What it exports is
listed in ``_native.pyi``.
"""

from ._native import __version__

__all__ = ["__version__"]
