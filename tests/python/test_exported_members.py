"""The packages' public surfaces: ``__all__`` is complete, sorted and importable."""

import distribute_challenge
import mystic_native
import mystic_wire
from distribute_challenge import DistributeError
from mystic_native import _native

# Public submodules, imported on purpose, not names of the package.
SUBMODULES = {"joblib"}


def test_all_is_complete_and_sorted():
    public = sorted(
        name
        for name in dir(distribute_challenge)
        if not name.startswith("_") and name not in SUBMODULES
    )
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


def test_the_payload_format_lists_its_members():
    public = sorted(name for name in dir(mystic_wire) if not name.startswith("_"))
    assert mystic_wire.__all__ == public
    assert mystic_wire.__all__ == sorted(mystic_wire.__all__)


def test_the_native_core_lists_its_members_which_are_the_extension_s():
    public = sorted(name for name in dir(mystic_native) if not name.startswith("_"))
    assert mystic_native.__all__ == sorted([*public, "__version__"])
    for name in mystic_native.__all__:
        assert getattr(mystic_native, name) is getattr(_native, name), name
    extension = {name for name in dir(_native) if not name.startswith("__")}
    assert set(mystic_native.__all__) == extension | {"__version__"}


def test_the_client_re_exports_the_payload_format_s_exceptions():
    for name in distribute_challenge.__all__:
        if name not in ("Executor", "compute_this"):
            assert getattr(distribute_challenge, name) is getattr(mystic_wire, name), name
