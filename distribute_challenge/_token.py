"""Who makes the calls: the bearer token, and where it may be sent.

Token: the ``token=`` argument, else ``$DISTRIBUTE_TOKEN``; sent as
``authorization: Bearer <token>``.

A token lets whoever holds it run code on the gateway, so it is not sent in
plaintext beyond this host: to a ``grpc://`` (or ``dns:///``) target with a
host that is not loopback (``127.0.0.0/8``, ``::1``, ``localhost``) or
``unix:``, a call with a token raises ``ValueError`` unless the caller opts
in with ``compute_this(insecure_plaintext_token=True)`` or
``$DISTRIBUTE_INSECURE_PLAINTEXT_TOKEN=1`` (for a network that is private
end to end, e.g. a service mesh that encrypts it). ``grpcs://`` needs no
opt-in.
"""

from __future__ import annotations

import os

from ._target import Target

TOKEN_ENV = "DISTRIBUTE_TOKEN"
PLAINTEXT_TOKEN_ENV = "DISTRIBUTE_INSECURE_PLAINTEXT_TOKEN"

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


def resolve_token(token: str | None) -> str | None:
    """The token for a call: argument, then environment; None for no token."""
    if token is None:
        token = os.environ.get(TOKEN_ENV) or None
    return token


def authorization(
    target: Target, token: str | None, insecure_plaintext_token: bool = False
) -> tuple[tuple[str, str], ...]:
    """The call metadata that carries the token to ``target`` (empty without one).

    Raises ``ValueError`` when the token would cross the network in plaintext
    and the caller has not opted in (see the module docstring)."""
    token = resolve_token(token)
    if not token:
        return ()
    if not target.tls and not target.is_loopback() and not _opted_in(insecure_plaintext_token):
        raise ValueError(
            f"refusing to send the token in plaintext to {target.url}: anyone on the "
            "network path could read it and run code on the gateway. Use grpcs:// (start "
            "the gateway with --tls-cert and --tls-key), or, if the network is private "
            "end to end, opt in with compute_this(insecure_plaintext_token=True) or "
            f"${PLAINTEXT_TOKEN_ENV}=1"
        )
    return (("authorization", f"Bearer {token}"),)


def _opted_in(argument: bool) -> bool:
    if argument:
        return True
    value = os.environ.get(PLAINTEXT_TOKEN_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(
        f"${PLAINTEXT_TOKEN_ENV} is {value!r}; set it to 1 to allow sending the token in "
        "plaintext, or to 0 (or unset it) to refuse"
    )
