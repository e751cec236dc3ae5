"""What cannot travel: unpicklable arguments are refused before anything is
sent; unpicklable results and undecodable calls become SerializationError and
the worker goes on serving."""

from __future__ import annotations

import asyncio
import sys
import threading
import types

import pytest

from distribute_challenge import SerializationError


def echo(value):
    return value


def returns_a_lock():
    print("printed before the bad result")
    return threading.Lock()


def holds_a_generator():
    return {"items": (n for n in range(3))}


def returns_a_worker_only_object():
    # A class in a module that exists only in the worker: pickled by reference
    # there, it cannot be unpickled by the client.
    module = types.ModuleType("only_in_the_worker")
    exec("class Thing:\n    pass\n", module.__dict__)
    module.Thing.__module__ = "only_in_the_worker"
    sys.modules["only_in_the_worker"] = module
    return module.Thing()


@pytest.mark.parametrize(
    "argument",
    [threading.Lock(), (n for n in range(3)), {"nested": [threading.RLock()]}],
    ids=["lock", "generator", "nested-rlock"],
)
def test_unpicklable_arguments_are_refused_before_sending(remote, gateway, argument):
    served = gateway.calls_served()
    with pytest.raises(SerializationError, match="cannot pickle the call to echo"):
        remote(echo)(argument).run()
    assert gateway.calls_served() == served


def test_unpicklable_arguments_are_refused_by_async_run_too(remote, gateway):
    served = gateway.calls_served()
    with pytest.raises(SerializationError):
        asyncio.run(remote(echo)(threading.Lock()).async_run())
    assert gateway.calls_served() == served


@pytest.mark.parametrize("function", [returns_a_lock, holds_a_generator])
def test_unpicklable_results_are_a_serialization_error(remote, gateway, capsys, function):
    restarts = gateway.restarts()
    with pytest.raises(SerializationError, match="could not be pickled"):
        remote(function)().run()
    if function is returns_a_lock:
        assert capsys.readouterr().out == "printed before the bad result\n"
    for value in range(4):  # whichever worker ran it still serves
        assert remote(echo)(value).run() == value
    assert gateway.restarts() == restarts


def test_results_the_client_cannot_unpickle_are_a_serialization_error(remote):
    with pytest.raises(SerializationError, match="only_in_the_worker"):
        remote(returns_a_worker_only_object)().run()


def test_calls_the_worker_cannot_unpickle_are_a_serialization_error(remote, gateway):
    module = types.ModuleType("only_in_the_client")
    exec("class Thing:\n    pass\n", module.__dict__)
    module.Thing.__module__ = "only_in_the_client"
    sys.modules["only_in_the_client"] = module
    try:
        with pytest.raises(SerializationError, match="could not decode the call"):
            remote(echo)(module.Thing()).run()
    finally:
        del sys.modules["only_in_the_client"]
    assert remote(echo)("next").run() == "next"
