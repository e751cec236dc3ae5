"""The package's public surface: ``__all__`` is complete, sorted and importable."""

import distribute_challenge
from distribute_challenge import DistributeError


def test_all_is_complete_and_sorted():
    public = sorted(name for name in dir(distribute_challenge) if not name.startswith("_"))
    assert distribute_challenge.__all__ == public
    assert distribute_challenge.__all__ == sorted(distribute_challenge.__all__)


def test_every_member_is_shown_under_the_package():
    for name in distribute_challenge.__all__:
        assert getattr(distribute_challenge, name).__module__ == "distribute_challenge", name


def test_system_errors_share_one_base():
    system_errors = {
        "AuthenticationError",
        "CallTimeout",
        "PayloadTooLarge",
        "SerializationError",
        "ServerBusy",
        "ServerUnavailable",
        "WorkerCrashed",
    }
    assert system_errors < set(distribute_challenge.__all__)
    for name in system_errors:
        assert issubclass(getattr(distribute_challenge, name), DistributeError), name
    # The stand-in for a function's own exception is not a system failure.
    assert not issubclass(distribute_challenge.RemoteError, DistributeError)
