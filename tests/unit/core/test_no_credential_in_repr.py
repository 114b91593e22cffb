"""No record that holds a credential shows it in its repr or str.

The test walks every dataclass and pydantic model in the package; each field whose name says
it holds a credential is filled with a marker, and the marker must not appear in ``repr`` or
``str``. A new class with a credential field and a default repr fails here.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil
import re
from datetime import UTC, datetime
from typing import Any

import pydantic
import pytest

import valetkey
from valetkey.core.exchange_values import Issued
from valetkey.core.models import Connector
from valetkey.core.providers import Capabilities

MARKER = "MARKER-credential-7f3a9c"

#: Field names that hold a credential.
CREDENTIAL = re.compile(
    r"^(.*_)?(token|secret|secrets|password|credential|verifier|code|assertion|kek|key|nonce|"
    r"api_key|private_key|client_secret|refresh_token|access_token|subject_token|owner_token)$",
    re.IGNORECASE,
)

#: Fields whose names look like credentials but are not, each with the reason.
NOT_CREDENTIALS = {
    "valetkey.cli.local.RotationReport.new_kek": "a key id, printed by `keys rotate`",
    "valetkey.core.authorizations.PendingAuthorization.user_code": "shown to the person to type in",
    "valetkey.core.consent_values.Started.user_code": "shown to the person to type in",
    "valetkey.core.providers.DeviceStart.user_code": "shown to the person to type in",
    "valetkey.core.providers.UserFlows.assertion": "the provider's jwt-bearer grant, not an assertion",
    "valetkey.core.providers.UserFlows.authorization_code": "the provider's authorization code grant, not a code",
    "valetkey.core.models.TokenRequest.assertion": "claims for the jwt-bearer assertion, not one",
    "valetkey.core.ports.CachedMint.token": "a MintedToken, whose own repr hides the credential",
    "valetkey.crypto.keyring._Envelope.nonce": "an AES-GCM nonce, public by design",
    "valetkey.core.ports.Invalidation.subject_key": "a subject's key, e.g. user:alice",
    "valetkey.providers.oauth.engine.Endpoints.token": "the token endpoint's URL",
    "valetkey.server.broker.Broker.verifier": "the identity verifier service",
}


def _classes() -> list[type]:
    found: list[type] = []
    for info in pkgutil.walk_packages(valetkey.__path__, "valetkey."):
        if ".migrations" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for obj in vars(module).values():
            if inspect.isclass(obj) and obj.__module__ == module.__name__:
                found.append(obj)
    return found


def _credential_fields(cls: type) -> list[str]:
    if dataclasses.is_dataclass(cls):
        names = [f.name for f in dataclasses.fields(cls)]
    elif issubclass(cls, pydantic.BaseModel):
        names = list(cls.model_fields)
    else:
        return []
    qualified = f"{cls.__module__}.{cls.__qualname__}"
    return [n for n in names if CREDENTIAL.match(n) and f"{qualified}.{n}" not in NOT_CREDENTIALS]


HOLDERS = [cls for cls in _classes() if _credential_fields(cls)]


def _with_markers(cls: type) -> Any:
    """An instance whose credential fields hold the marker and whose other fields are None."""
    secret = set(_credential_fields(cls))
    if dataclasses.is_dataclass(cls):
        instance = object.__new__(cls)
        for f in dataclasses.fields(cls):
            object.__setattr__(instance, f.name, MARKER if f.name in secret else None)
        return instance
    assert issubclass(cls, pydantic.BaseModel)
    return cls.model_construct(**{n: MARKER if n in secret else None for n in cls.model_fields})


def test_the_walk_finds_the_credential_holders() -> None:
    """The walk reaches the records known to hold credentials (else it would prove nothing)."""
    names = {cls.__qualname__ for cls in HOLDERS}
    assert {
        "Issued",
        "MintedToken",
        "TokenSet",
        "TokenResponse",
        "ClientAuth",
        "Connector",
        "Bootstrap",
        "MemberCreated",
        "AccessTokenCreated",
        "DevelopmentIdentity",
    } <= names


@pytest.mark.parametrize("cls", HOLDERS, ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_no_credential_field_shows_in_repr_or_str(cls: type) -> None:
    """Each field named like a credential stays out of repr() and str()."""
    instance = _with_markers(cls)
    assert MARKER not in repr(instance)
    assert MARKER not in str(instance)


def test_an_issued_record_hides_its_token() -> None:
    """The exchange's Issued record, built as the exchange builds it, hides the credential."""
    at = datetime(2030, 1, 1, tzinfo=UTC)
    connector = Connector(
        id="con_1",
        team_id="team_1",
        uid="api-key/k",
        service="api-key",
        name="k",
        type="api-key",
        config={},
        secrets={"apiKey": MARKER},
        created_at=at,
        updated_at=at,
    )
    issued = Issued(
        token=MARKER,
        expires_at=at,
        token_id="tok_1",
        connector=connector,
        capabilities=Capabilities(("app",), False, False, False),
        scopes=None,
        installation_id=None,
        cached=False,
    )
    assert MARKER not in repr(issued)
    assert MARKER not in str(issued)
    assert "tok_1" in repr(issued)
