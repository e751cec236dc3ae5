"""The joblib backend ``"mysticchallenge"``: ``joblib.Parallel`` (and so
scikit-learn's ``n_jobs``) on a gateway's workers. Importing this module
registers it::

    import distribute_challenge.joblib  # noqa: F401
    from joblib import Parallel, delayed, parallel_config

    with parallel_config(backend="mysticchallenge", server="grpc://127.0.0.1:8000"):
        squares = Parallel(n_jobs=-1)(delayed(pow)(x, 2) for x in range(1000))

``parallel_config``'s extra keywords go to :class:`GatewayBackend`
(``server``, ``token``, ``timeout``: as for ``compute_this``). It needs
joblib (the ``joblib`` extra: ``pip install 'mysticchallenge[joblib]'``).

Each batch of tasks that joblib makes is one call of an :class:`Executor`,
sent as ``operator.call(batch)``: the function the gateway and its workers
keep is ``operator.call``, and each batch travels as that call's argument
(its tasks' functions by value where ``@compute_this()`` would send them so).

The executor sends ``n_jobs`` batches at once: a worker that frees up gets
the next batch, in the order joblib made them (calls sent together to the
gateway's queue may not keep their order). joblib's automatic batching
groups short tasks until a batch takes ``MIN_IDEAL_BATCH_DURATION`` (20 ms;
joblib's own 0.2 s is for process pools), so that a call's round trip stays
small beside its work while a task of a few tens of milliseconds or more
still goes alone and keeps its place.
"""

from __future__ import annotations

import operator
from typing import Any

try:
    from joblib.parallel import (
        AutoBatchingMixin,
        ParallelBackendBase,
        SequentialBackend,
        register_parallel_backend,
    )
except ImportError:
    raise ImportError(
        "distribute_challenge.joblib is the joblib backend, but joblib is not installed: "
        "pip install 'mysticchallenge[joblib]' (or pip install joblib)"
    ) from None

from ._by_value import pickle_module_by_value_if_needed
from ._executor import Executor

__all__ = ["BACKEND", "GatewayBackend"]

BACKEND = "mysticchallenge"


class GatewayBackend(AutoBatchingMixin, ParallelBackendBase):
    """A joblib backend whose workers are a gateway's.

    ``n_jobs=-1`` (and ``None``: the default inside ``parallel_config``)
    means every worker of the gateway (every gateway of a list), asked once
    per backend (per ``parallel_config``); ``-2`` one fewer, and so on. The
    tasks' exceptions are raised with their own type. A task's own
    ``Parallel`` (nested) runs in its worker, one task after another. The
    executor, and its connection, serve every ``Parallel`` call of the
    backend; they stop when it goes.
    """

    supports_retrieve_callback = True
    uses_threads = False
    supports_sharedmem = False
    default_n_jobs = -1
    MIN_IDEAL_BATCH_DURATION = 0.02
    MAX_IDEAL_BATCH_DURATION = 0.1

    def __init__(
        self,
        server: str | None = None,
        token: str | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._options = {"server": server, "token": token, "timeout": timeout}
        # Asks the gateway for its workers (never started); refuses bad options now.
        self._probe = Executor(**self._options)
        self._workers: int | None = None
        self._n_jobs = 1
        self._executor: Executor | None = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None or n_jobs < 0:
            if self._workers is None:
                self._workers = self._probe.get_workers()
            return max(self._workers + 1 + (n_jobs or -1), 1)
        return n_jobs

    def configure(self, n_jobs: int = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        self.parallel = parallel
        n_jobs = self.effective_n_jobs(n_jobs)
        if self._executor is None or n_jobs != self._n_jobs:
            self._n_jobs = n_jobs
            self._start()
        return n_jobs

    def submit(self, func: Any, callback: Any = None) -> Any:
        for task in getattr(func, "items", ()):
            pickle_module_by_value_if_needed(getattr(task[0], "__module__", None))
        future = self._executor.submit(operator.call, func)
        if callback is not None:
            future.add_done_callback(callback)
        return future

    def retrieve_result_callback(self, future: Any) -> Any:
        return future.result()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A task failed: the batches not yet answered are cancelled."""
        self._stop(cancel=True)
        if ensure_ready:
            self._start()

    def terminate(self) -> None:
        self.reset_batch_stats()  # the executor stays for the next Parallel call

    def get_nested_backend(self) -> tuple[ParallelBackendBase, int | None]:
        # A worker runs one call at a time: a nested Parallel runs in it, in turn.
        return SequentialBackend(nesting_level=(self.nesting_level or 0) + 1), None

    def _start(self) -> None:
        """A new executor, sending ``n_jobs`` batches at once (see the module doc)."""
        self._stop(cancel=False)
        self._executor = Executor(**self._options, max_in_flight=self._n_jobs)

    def _stop(self, cancel: bool) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=cancel)


register_parallel_backend(BACKEND, GatewayBackend)
