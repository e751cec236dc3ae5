"""Entry point: ``python -m worker_shim --transport pipe|shm
[--max-payload-bytes BYTES] [--memory-limit BYTES] [--max-output-bytes BYTES]
[--preload M,...] [--debuggable]`` runs one worker; ``python -m worker_shim
--template [--preload M,...] [--debuggable]`` runs the template that forks
workers (``_template.py``), each of which then goes on here as if started
with its own arguments.

A worker's fd 0 is its link to the gateway, a socket that the native core
(``mystic_native.WorkerLink``) speaks: base64 lines with ``pipe``; with
``shm``, the handshake and descriptors, while payloads go through
shared-memory rings that the gateway sends over it once the worker has
said it is no longer dumpable. Segments (a call's arguments, a result)
come and go over the link with their request and response.

Start-up order: parse arguments, close the process to its siblings (not
dumpable, unless ``--debuggable``: ``_dumpable.py``), make sure the native
core (``mystic_native``) imports (else exit ``NATIVE_MISSING`` with one line
saying so, which the gateway turns into what to install), tie the worker's
life to the gateway's, move the link off fd 0, cap the address space,
preload, then serve calls until the gateway goes (``_loop.py``, which owns
the exit statuses of a running worker).
"""

from __future__ import annotations

import argparse
import resource
import sys

from . import _dumpable, _output, _parent, _stdio


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m worker_shim",
        description="A mysticchallenge worker; the gateway starts it.",
    )
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--transport", choices=("pipe", "shm"))
    role.add_argument("--template", action="store_true", help="fork workers on request")
    parser.add_argument(
        "--max-payload-bytes",
        type=_bytes,
        default=DEFAULT_MAX_PAYLOAD_BYTES,
        help="the largest request the gateway sends, in bytes "
        f"(default: {DEFAULT_MAX_PAYLOAD_BYTES})",
    )
    parser.add_argument(
        "--memory-limit", type=int, help="address-space limit in bytes (RLIMIT_AS, soft and hard)"
    )
    parser.add_argument(
        "--debuggable",
        action="store_true",
        help="stay dumpable (core dumps, debuggers); see _dumpable.py",
    )
    parser.add_argument(
        "--max-output-bytes",
        type=_bytes,
        default=_output.DEFAULT_MAX_BYTES,
        help="what a call may print to stdout, and again to stderr, in UTF-8 bytes: the "
        "worker keeps the first and the last half of it and says how much it dropped "
        f"(default: {_output.DEFAULT_MAX_BYTES})",
    )
    parser.add_argument(
        "--preload",
        type=lambda text: [name for name in text.split(",") if name],
        default=[],
        help="modules to import before serving, comma-separated",
    )
    return parser.parse_args(argv)


def _bytes(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


#: The gateway's default ``--max-payload-bytes``.
DEFAULT_MAX_PAYLOAD_BYTES = 1 << 30

#: The exit status of a worker (or template) whose interpreter cannot import
#: the native core.
NATIVE_MISSING = 4


def native_core() -> bool:
    """Imports ``mystic_native``; says why not on stderr and returns False."""
    try:
        import mystic_native  # noqa: F401
    except ImportError as exc:
        print(
            f"worker_shim: cannot import mystic_native, the native extension of "
            f"mysticchallenge: {exc}",
            file=sys.stderr,
        )
        return False
    return True


def preload(modules: list[str]) -> bool:
    """Imports ``modules``; says which one failed on stderr and returns False."""
    import importlib

    for name in modules:
        try:
            importlib.import_module(name)
        except BaseException as exc:
            print(
                f"worker_shim: cannot preload {name}: {type(exc).__name__}: {exc}", file=sys.stderr
            )
            return False
    return True


def limit_memory(limit: int) -> bool:
    """Caps this process's address space. Soft and hard limits are both set,
    so that the functions it runs cannot raise it again; an allocation past
    it raises ``MemoryError`` in the call, and the worker lives on. Says why
    on stderr and returns False when the cap cannot be set."""
    try:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ValueError, OSError) as exc:
        print(
            f"worker_shim: cannot cap the address space at {limit} bytes: {exc}; "
            "lower --worker-memory-bytes below the limit the gateway runs under (ulimit -v)",
            file=sys.stderr,
        )
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.debuggable:
        _dumpable.make_undumpable()
    if not native_core():
        return NATIVE_MISSING
    if args.template:
        from . import _template

        outcome = _template.main(args.preload)
        if isinstance(outcome, int):
            return outcome
        # A forked worker, with its own arguments; its preloads are the template's.
        sys.argv[1:] = outcome
        args = parse_args(outcome)
    _parent.die_with_parent()
    link = _stdio.take_link()

    # Imported after fd hygiene: nothing may print to fd 1. (A forked worker
    # has them already, from the template.)
    from mystic_native import WorkerLink

    from . import _executor, _loop

    _output.set_max_bytes(args.max_output_bytes)
    if args.memory_limit is not None and not limit_memory(args.memory_limit):
        return 2
    if not preload(args.preload):
        from ._template import PRELOAD_FAILED

        return PRELOAD_FAILED

    try:
        return _loop.serve(
            WorkerLink(link, args.transport, args.max_payload_bytes), _executor.execute
        )
    except MemoryError:
        # Calls catch their own MemoryError; this is the worker itself (its
        # imports, its rings, a request buffer) not fitting.
        hint = ""
        if args.memory_limit is not None:
            hint = f" under --worker-memory-bytes {args.memory_limit}; raise it"
        print(f"worker_shim: out of memory outside a call{hint}; exiting", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
