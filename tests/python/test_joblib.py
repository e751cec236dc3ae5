"""The joblib backend ``"mysticchallenge"`` against real gateways on both
transports.

- ``Parallel`` under ``parallel_config(backend="mysticchallenge",
  server=...)`` gives joblib's results, computed by the gateway's workers.
- ``n_jobs=-1`` is the gateway's workers (a gateway of 3 on this 2-core
  machine: not the local CPU count), ``-2`` one fewer.
- Short tasks are batched: far fewer calls reach the gateway than tasks.
- A task's exception is raised with its type; ``return_as="generator"`` and
  ``"generator_unordered"`` yield the results.
- Without joblib, importing the backend says what to install.
- scikit-learn's ``GridSearchCV(n_jobs=-1)`` on the gateway finds the best
  parameters and score of a local ``n_jobs=1`` run.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import types

import joblib
import pytest
from joblib import Parallel, delayed, parallel_config

import distribute_challenge.joblib  # noqa: F401  (registers the backend)


class Refused(Exception):
    def __init__(self, item):
        super().__init__(f"refused {item}")
        self.item = item


def square(x):
    return x * x


def pid(_):
    return os.getpid()


def refuse(x, bad):
    if x == bad:
        raise Refused(x)
    return x


def on(url: str) -> parallel_config:
    return parallel_config(backend="mysticchallenge", server=url)


def test_parallel_runs_the_tasks_on_the_gateway_s_workers(gateway):
    with on(gateway.url):
        assert Parallel(n_jobs=2)(delayed(square)(x) for x in range(100)) == [
            x * x for x in range(100)
        ]
        pids = set(Parallel(n_jobs=2)(delayed(pid)(x) for x in range(20)))
    assert pids <= gateway.worker_pids()
    assert os.getpid() not in pids


def test_n_jobs_minus_one_means_the_gateway_s_workers(start_gateway):
    gateway = start_gateway("--workers", "3")
    with on(gateway.url):
        assert joblib.effective_n_jobs(-1) == 3
        assert joblib.effective_n_jobs(-2) == 2
        assert joblib.effective_n_jobs(None) == 3  # the backend's default
        assert joblib.effective_n_jobs(2) == 2
        assert Parallel(n_jobs=-1)(delayed(square)(x) for x in range(10)) == [
            x * x for x in range(10)
        ]


def test_short_tasks_travel_in_batches(gateway):
    before = gateway.calls_served()
    with on(gateway.url):
        roots = Parallel(n_jobs=-1)(delayed(math.sqrt)(x) for x in range(5000))
    assert roots == [math.sqrt(x) for x in range(5000)]
    assert gateway.calls_served() - before < 2500


def test_a_task_s_exception_keeps_its_type(server):
    with on(server), pytest.raises(Refused, match="refused 7") as caught:
        Parallel(n_jobs=2)(delayed(refuse)(x, 7) for x in range(20))
    assert caught.value.item == 7


def test_results_as_a_generator(server):
    with on(server):
        ordered = Parallel(n_jobs=2, return_as="generator")(delayed(square)(x) for x in range(30))
        assert isinstance(ordered, types.GeneratorType)
        assert list(ordered) == [x * x for x in range(30)]
        unordered = Parallel(n_jobs=2, return_as="generator_unordered")(
            delayed(square)(x) for x in range(30)
        )
        assert sorted(unordered) == [x * x for x in range(30)]


def test_without_joblib_the_backend_says_what_to_install():
    hidden = "import sys; sys.modules['joblib'] = None; import distribute_challenge.joblib"
    done = subprocess.run([sys.executable, "-c", hidden], capture_output=True, text=True)
    assert done.returncode != 0
    assert "ImportError: distribute_challenge.joblib is the joblib backend" in done.stderr
    assert "pip install 'mysticchallenge[joblib]'" in done.stderr


def test_a_grid_search_on_the_gateway_matches_a_local_one(gateway):
    from sklearn.datasets import load_iris
    from sklearn.model_selection import GridSearchCV
    from sklearn.svm import SVC

    features, labels = load_iris(return_X_y=True)
    grid = {"C": [0.1, 1, 10], "gamma": [0.01, 0.1, 1]}
    local = GridSearchCV(SVC(), grid, cv=3, n_jobs=1).fit(features, labels)
    before = gateway.calls_served()
    with on(gateway.url):
        remote = GridSearchCV(SVC(), grid, cv=3, n_jobs=-1).fit(features, labels)
    assert gateway.calls_served() > before  # the fits ran there
    assert remote.best_params_ == local.best_params_
    assert remote.best_score_ == local.best_score_
