"""Stubs of the extension module ``mystic_native._native`` (native/src/)."""

__version__: str
