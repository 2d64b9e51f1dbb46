"""Who may do what: the scopes of API keys, the caller of a request, and what each action needs.

Three scopes, each what one kind of client needs and no more:

- ``predict`` (the default, and every key made before scopes existed): classify, and read back
  the predictions and statistics of its own key;
- ``read``, for dashboards: models, statistics and every key's stored predictions, and nothing
  that writes (no classifying, no repository control);
- ``admin``, for operators: everything, every key's predictions, and repository control (load,
  unload) when the server allows it (``GGA_MODEL_CONTROL=explicit``).

In open mode (no key exists) nobody is identified: the anonymous caller classifies and reads
every stored prediction, and controls the repository only when the server allows it and listens
on loopback alone.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum

from models.errors import GGAUserError
from service.errors import Forbidden, ModelControlDisabled, ScopeTooNarrow


class Scope(StrEnum):
    """What an API key may do (stored with the key)."""

    READ = "read"
    PREDICT = "predict"
    ADMIN = "admin"


@dataclass(frozen=True)
class Caller:
    """Who sent a request.

    Attributes:
        key_id: The API key's id; None in open mode, where nobody is identified.
        scope: The key's scope (the anonymous caller of open mode may predict).
    """

    key_id: str | None
    scope: Scope

    @property
    def reads_all(self) -> bool:
        """Whether this caller reads every key's stored predictions, not only its own."""
        return self.key_id is None or self.scope in (Scope.READ, Scope.ADMIN)

    @property
    def reader(self) -> str | None:
        """The owner filter of the caller's reads: its key id, or None for every prediction."""
        return None if self.reads_all else self.key_id


ANONYMOUS = Caller(key_id=None, scope=Scope.PREDICT)

# The routes that classify (and so write predictions); a read key may call every other route
# it can reach. Repository control is checked by its own handlers (check_model_control).
CLASSIFY_ROUTES = frozenset({"/v1/models/{name}/predict", "/v2/models/{name}/infer"})


# A ``GGA_API_KEYS`` entry is ``KEY`` (the predict scope, as every entry was before scopes) or
# ``SCOPE:KEY``. A run of letters before the first colon is read as a scope, so a misspelt one
# stops the start instead of leaving the operator's admin key a key nobody can use.
_SCOPED = re.compile(r"([A-Za-z]+):(.*)", re.DOTALL)


def parse_static_keys(entries: list[str]) -> list[tuple[Scope, str]]:
    """The scope and key of each ``GGA_API_KEYS`` entry.

    Messages name an entry by its position and never quote it: it is a secret.

    Raises:
        ValueError: An entry names an unknown scope or has no key after its scope, or one key
            is given twice with different scopes.
    """
    parsed: list[tuple[Scope, str]] = []
    first_at: dict[str, tuple[int, Scope]] = {}
    for position, entry in enumerate(entries, start=1):
        scope, key = Scope.PREDICT, entry
        match = _SCOPED.fullmatch(entry)
        if match is not None:
            name, key = match[1].lower(), match[2].strip()
            if name not in {s.value for s in Scope}:
                raise ValueError(
                    f"GGA_API_KEYS entry {position} begins with a word and a colon that name no "
                    "scope: write SCOPE:KEY with a scope of read, predict or admin, or "
                    "predict:KEY for a key that itself begins with letters and a colon"
                )
            if not key:
                raise ValueError(
                    f"GGA_API_KEYS entry {position} gives the scope {name!r} but no key after "
                    "the colon"
                )
            scope = Scope(name)
        earlier = first_at.setdefault(key, (position, scope))
        if earlier[1] != scope:
            raise ValueError(
                f"GGA_API_KEYS entries {earlier[0]} and {position} give the same key with "
                f"different scopes ({earlier[1].value}, {scope.value})"
            )
        parsed.append((scope, key))
    return parsed


class UnsafeModelControl(GGAUserError):
    """Repository control was asked for in open mode on an address other machines reach."""


def check_may_classify(caller: Caller) -> None:
    """Refuse a caller whose key may not classify.

    Raises:
        ScopeTooNarrow: A read key tried to classify.
    """
    if caller.scope == Scope.READ:
        raise ScopeTooNarrow(caller.scope, "classify", "'predict' or 'admin'")


def check_model_control(caller: Caller, model_control: str, host: str) -> None:
    """Whether ``caller`` may load or unload models on this server.

    Args:
        caller: The request's caller.
        model_control: ``GGA_MODEL_CONTROL`` (``none`` or ``explicit``).
        host: The address the server listens on (``GGA_HOST``).

    Raises:
        ModelControlDisabled: Control is off (``none``).
        Forbidden: Open mode on a non-loopback address, or a key without the admin scope.
    """
    if model_control != "explicit":
        raise ModelControlDisabled()
    if caller.key_id is None:
        if not is_loopback(host):
            raise Forbidden(open_control_refusal(host))
        return
    if caller.scope != Scope.ADMIN:
        raise ScopeTooNarrow(caller.scope, "load or unload models", "'admin'")


def check_may_manage_keys(caller: Caller) -> None:
    """Refuse a caller who may not create, list or revoke API keys: every caller but an admin.

    Open mode refuses too: nobody is identified there, and a key minted by anyone who reaches
    the port would be no protection; the first key is made on the host (``gga keys create``).

    Raises:
        Forbidden: Open mode.
        ScopeTooNarrow: A predict or read key.
    """
    if caller.key_id is None:
        raise Forbidden(
            "managing API keys over the API needs an admin key, and this server has none yet "
            "(open mode): create the first one on the host with "
            "`gga keys create NAME --scope admin`, or give one in GGA_API_KEYS as admin:KEY"
        )
    if caller.scope != Scope.ADMIN:
        raise ScopeTooNarrow(caller.scope, "manage API keys", "'admin'")


def open_control_refusal(host: str) -> str:
    """Why open mode may not control the repository on ``host``, and what to do instead."""
    return (
        f"repository control without API keys is allowed only on loopback, and this server "
        f"listens on {host}: create an admin key (`gga keys create NAME --scope admin`), or "
        "listen on 127.0.0.1, or set GGA_MODEL_CONTROL=none"
    )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a bind address) is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False
