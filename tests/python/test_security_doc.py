"""SECURITY.md names the tests that hold each of its claims: every file and
test it names exists, so that the page cannot outlive what backs it."""

from __future__ import annotations

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]
PYTHON_TESTS = REPO / "tests" / "python"


def named() -> list[str]:
    text = (REPO / "SECURITY.md").read_text()
    return re.findall(r"`((?:src/|tests/|test_)[\w/.*]+(?:::\w+)?)`", text)


def test_security_md_names_tests_that_exist():
    names = named()
    assert len(names) > 20, names
    for name in names:
        path, _, test = name.partition("::")
        if "*" in path:
            assert list(REPO.glob(path)), name
            continue
        file = REPO / path if "/" in path else PYTHON_TESTS / path
        if path.endswith("/"):
            assert file.is_dir(), f"SECURITY.md names {name}, which does not exist"
            continue
        assert file.is_file(), f"SECURITY.md names {name}, which does not exist"
        if test:
            assert re.search(rf"^def {test}\(", file.read_text(), re.M), (
                f"SECURITY.md names {name}, which does not exist"
            )
