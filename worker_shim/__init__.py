"""worker_shim: the Python side of a mysticchallenge worker.

The gateway runs ``<python> -m worker_shim --transport pipe``. Map:

- ``__main__.py``: arguments and start-up wiring.
- ``_parent.py``: die with the gateway (``PR_SET_PDEATHSIG``).
- ``_stdio.py``: move the protocol off fds 0/1 so user code cannot touch it.
- ``_pipe.py``: the pipe transport's line protocol loop.
- ``_executor.py``: run one encoded call and encode its outcome.
- ``_tracebacks.py``: pickle a raised exception with its traceback and chain.

The payload format is the ``mystic_wire`` package.
"""
