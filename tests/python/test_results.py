"""Calls through the real gateway: what travels there and back (values, closures,
lambdas, classes, arguments, depmodules)."""

from __future__ import annotations

import importlib
import json as jl
import os
from collections import OrderedDict, namedtuple
from decimal import Decimal
from fractions import Fraction

import pytest

Pair = namedtuple("Pair", "left right")


class Vector:
    """A class of this test module: the worker cannot import it, so it travels by value."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __add__(self, other):
        return Vector(self.x + other.x, self.y + other.y)

    def __eq__(self, other):
        return isinstance(other, Vector) and (self.x, self.y) == (other.x, other.y)

    def __hash__(self):
        return hash((self.x, self.y))


def echo(value):
    return value


def add_vectors(a, b):
    return a + b


def signature(a, b=2, *rest, c, d=4, **extra):
    return {"a": a, "b": b, "rest": rest, "c": c, "d": d, "extra": extra}


def pid():
    return os.getpid()


def call_inside_the_worker(function, value):
    return function(value), os.getpid()


def pid_and_square(x):
    return x * x, os.getpid()


def uses_textwrap():
    return textwrap.shorten("hello remote world", width=12)  # noqa: F821 - bound by depmodules


def uses_colorsys():
    return colorsys.rgb_to_hsv(1.0, 0.0, 0.0)  # noqa: F821 - bound by depmodules


def uses_dotted():
    return xml.dom.minidom.parseString("<a><b/></a>").documentElement.tagName  # noqa: F821


def bound_names():
    names = globals()
    return names["jl"].__name__, names["json"].__name__


VALUES = [
    None,
    True,
    0,
    -17,
    2**200,
    -(2**90),
    3.25,
    float("inf"),
    1e-300,
    complex(1, -2),
    "",
    "héllo wörld ✓",
    b"",
    bytes(range(256)),
    bytearray(b"mutable"),
    [1, [2, [3, []]]],
    (1, ("nested", (None,))),
    {"a": {"b": [1, 2, {"c": (3,)}]}, 1: "int key", (1, 2): "tuple key"},
    {1, 2, 3},
    frozenset({"x", "y"}),
    OrderedDict([("z", 1), ("a", 2)]),
    Decimal("3.14159265358979323846"),
    Fraction(22, 7),
    range(0, 100, 7),
    Pair(1, "two"),
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_values_round_trip(remote, value):
    result = remote(echo)(value).run()
    assert result == value
    assert type(result) is type(value)


def test_get_workers(remote):
    assert remote(echo).get_workers() == 2


def test_closures(remote):
    def make_adder(n):
        def add(x):
            return x + n

        return add

    assert remote(make_adder(10))(5).run() == 15
    assert remote(make_adder("a"))("b").run() == "ba"


def test_lambdas(remote):
    factor = 3
    assert remote(lambda x: x * factor)(14).run() == 42


def test_args_and_kwargs(remote):
    result = remote(signature)(1, 20, 30, 40, c=5, e=6).run()
    assert result == {"a": 1, "b": 20, "rest": (30, 40), "c": 5, "d": 4, "extra": {"e": 6}}
    with pytest.raises(TypeError, match="c"):
        remote(signature)(1).run()


def test_module_classes_keep_their_identity(remote):
    result = remote(add_vectors)(Vector(1, 2), Vector(10, 20)).run()
    assert isinstance(result, Vector)
    assert result == Vector(11, 22)


def test_local_classes_keep_their_identity(remote):
    class Counter:
        def __init__(self, start):
            self.count = start

        def bump(self):
            self.count += 1
            return self

    def bump_twice(counter):
        return counter.bump().bump()

    result = remote(bump_twice)(Counter(5)).run()
    assert isinstance(result, Counter)
    assert result.count == 7
    assert remote(lambda: Counter)().run() is Counter


def test_a_remote_function_passed_along_runs_inside_the_worker(remote):
    inner = remote(pid_and_square)
    (square, inner_pid), outer_pid = remote(call_inside_the_worker)(inner, 9).run()
    assert square == 81
    assert inner_pid == outer_pid


def test_the_call_object_runs_again(remote):
    call = remote(pid_and_square)(4)
    assert call.run()[0] == 16
    assert call.run()[0] == 16


def test_depmodules_by_name(remote):
    # Without first: a worker keeps what depmodules bound into a function's
    # globals, so once it has run the call below, it would find the name.
    with pytest.raises(NameError, match="textwrap"):
        remote(uses_textwrap)().run()
    assert remote(uses_textwrap, depmodules=["textwrap"])().run() == "hello [...]"


def test_depmodules_by_object(remote):
    colorsys = importlib.import_module("colorsys")
    assert remote(uses_colorsys, depmodules=[colorsys])().run() == (0.0, 1.0, 1.0)


def test_dotted_depmodules_bind_the_top_level_package(remote):
    assert remote(uses_dotted, depmodules=["xml.dom.minidom"])().run() == "a"


def test_depmodules_bind_the_alias_names_of_the_function_globals(remote):
    assert jl.__name__ == "json"  # this module imports json as jl
    assert remote(bound_names, depmodules=[jl])().run() == ("json", "json")


def test_a_depmodule_the_worker_cannot_import_raises_module_not_found(remote):
    with pytest.raises(ModuleNotFoundError, match="no_such_module_anywhere"):
        remote(echo, depmodules=["no_such_module_anywhere"])(1).run()


def test_calls_run_in_the_workers(remote, gateway):
    assert remote(pid)().run() in gateway.worker_pids()
    assert remote(pid)().run() != os.getpid()
