"""worker_shim: the Python side of a mysticchallenge worker.

The gateway runs ``<python> -m worker_shim --template`` and has it fork
workers, or ``<python> -m worker_shim --transport pipe|shm ...`` for each. Map:

- ``__main__.py``: arguments and start-up wiring, the transport choice.
- ``_template.py``: the template (``--template``) that imports all this once
  and forks workers on the gateway's request.
- ``_parent.py``: die with the gateway (``PR_SET_PDEATHSIG``).
- ``_dumpable.py``: close the process to the other processes of its user.
- ``_stdio.py``: move the link off fd 0 so user code cannot touch it.
- ``_loop.py``: the one serve loop over the link (``mystic_native.WorkerLink``,
  which speaks either transport in Rust) and the exit statuses of a worker.
- ``_executor.py``: run one encoded call and encode its outcome.
- ``_items.py``: a call that streams its items, chunk by chunk.
- ``_output.py``: what a call prints, its head and tail kept within a bound.
- ``_functions.py``: the functions the worker holds, by digest.
- ``_tracebacks.py``: pickle a raised exception with its traceback and chain.

The payload format is the ``mystic_wire`` package; the worker imports nothing
of the client (``distribute_challenge``, grpc, protobuf, asyncio).
"""
