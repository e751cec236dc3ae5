"""Makes a raised exception picklable together with its traceback and chain.

tblib pickles tracebacks (as lightweight frames the client turns back into
real tracebacks) and exceptions with their ``__cause__``, ``__context__`` and
notes. Its exception reducer rebuilds an exception without calling
``__init__`` whenever the class's ``__init__`` is not ``BaseException``'s or
``OSError``'s, which loses what built-in ``__init__`` methods set
(``SystemExit(7).code`` would come back as None). So the rule here: a class
with an ``__init__`` written in Python and the default ``__reduce__`` goes
through tblib's reducer (it keeps ``args`` and ``__dict__``); every other
exception is rebuilt the standard way, by calling its type with its ``args``,
with the traceback and chain attached by tblib's ``unpickle_exception``.

cloudpickle names the code of every function it pickles by value
``<dynamic-code>``; the traceback reducer puts back the file of the module the
function came from (its globals' ``__file__``), so the caller's traceback
shows the source lines.

The exception reducers are registered only while one exception is being
pickled; the traceback reducer is always on.
"""

from __future__ import annotations

import contextlib
import copyreg
import types
from collections.abc import Iterator

from tblib import pickling_support

_DEFAULT_REDUCERS = (BaseException.__reduce__, OSError.__reduce__)
_DYNAMIC_CODE = "<dynamic-code>"


def _reduce_traceback(tb: types.TracebackType):
    function, (frame, lineno, following) = pickling_support.pickle_traceback(tb)
    _restore_filename(frame)
    entry = following
    while entry is not None:
        _restore_filename(entry.tb_frame)
        entry = entry.tb_next
    return function, (frame, lineno, following)


def _restore_filename(frame) -> None:
    origin = frame.f_globals.get("__file__")
    if frame.f_code.co_filename == _DYNAMIC_CODE and isinstance(origin, str):
        frame.f_code.co_filename = origin


copyreg.pickle(types.TracebackType, _reduce_traceback)


@contextlib.contextmanager
def picklable(exc: BaseException) -> Iterator[None]:
    """Within the block, ``exc`` and its chain pickle with their tracebacks."""
    added = []
    for cls in {type(each) for each in _chain(exc)}:
        if cls not in copyreg.dispatch_table:
            copyreg.pickle(cls, _reduce_exception)
            added.append(cls)
    try:
        yield
    finally:
        for cls in added:
            copyreg.dispatch_table.pop(cls, None)


def _reduce_exception(exc: BaseException):
    cls = type(exc)
    if isinstance(cls.__init__, types.FunctionType) and cls.__reduce__ in _DEFAULT_REDUCERS:
        return pickling_support.pickle_exception(exc)
    function, args, *state = exc.__reduce__()
    return (
        pickling_support.unpickle_exception,
        (
            function,
            args,
            exc.__cause__,
            exc.__traceback__,
            exc.__context__,
            exc.__suppress_context__,
            getattr(exc, "__notes__", None),
        ),
        *state,
    )


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                pending.append(linked)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
