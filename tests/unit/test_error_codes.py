"""Wire codes back to error classes: one static table, the same in every process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_errors import all_error_classes

from valetkey import errors
from valetkey.cli import errors as cli_errors
from valetkey.crypto import errors as crypto_errors
from valetkey.error_codes import ERROR_CLASSES, STATUS_FALLBACK, error_for_code
from valetkey.identity import errors as identity_errors
from valetkey.private_paths import InsecureStorage
from valetkey.providers.registry import ProviderPluginError
from valetkey.server import errors as server_errors

#: Errors a broker never sends, and why: the table leaves them out on purpose.
NEVER_SENT: dict[type[errors.ValetkeyError], str] = {
    cli_errors.CliError: "raised by the CLI itself",
    cli_errors.CredentialsNotFound: "raised by the CLI itself",
    cli_errors.ProjectNotLinked: "raised by the CLI itself",
    cli_errors.DatabaseUnreachable: "raised by the CLI itself",
    cli_errors.UsageError: "raised by the CLI itself",
    cli_errors.ConfirmationRequired: "raised by the CLI itself",
    InsecureStorage: "raised while the broker starts",
    ProviderPluginError: "raised while the broker loads its providers",
}

#: Codes the HTTP layer sends for requests no route handles (wrong method, Accept or
#: Content-Type, another status): no class of their own, they arrive as the status's fallback.
FRAMEWORK_CODES = {"method_not_allowed", "not_acceptable", "unsupported_media_type", "http_error"}


def _module_classes(module: object) -> list[type[errors.ValetkeyError]]:
    return [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type)
        and issubclass(obj, errors.ValetkeyError)
        and obj.__module__ == module.__name__  # type: ignore[attr-defined]
    ]


def test_every_error_a_broker_sends_is_in_the_table() -> None:
    """Each error class in the package is in the table under its own code, or listed as never sent."""
    for cls in all_error_classes():
        if cls in NEVER_SENT:
            assert cls.code not in ERROR_CLASSES
        else:
            assert ERROR_CLASSES.get(cls.code) is cls, cls


def test_the_table_holds_exactly_the_wire_error_modules() -> None:
    """The table is the classes of valetkey.errors, identity.errors and crypto.errors, nothing else."""
    expected = {
        *_module_classes(errors),
        *_module_classes(identity_errors),
        *_module_classes(crypto_errors),
    }
    assert set(ERROR_CLASSES.values()) == expected
    assert all(code == cls.code for code, cls in ERROR_CLASSES.items())


@pytest.mark.parametrize("code", sorted(ERROR_CLASSES))
def test_each_code_rebuilds_its_class(code: str) -> None:
    """A refusal with a known code becomes exactly that class, with its message and details."""
    cls = ERROR_CLASSES[code]
    err = error_for_code(code, "refused", cls.status, {"field": "scope"})
    assert type(err) is cls
    assert (err.code, err.message, err.details) == (code, "refused", {"field": "scope"})


def test_a_known_code_wins_over_the_status() -> None:
    """The code decides the class, whatever status it came with."""
    err = error_for_code("token_expired", "expired", 400, {})
    assert type(err) is identity_errors.TokenExpired


@pytest.mark.parametrize(
    ("status", "cls"),
    [(400, errors.InvalidRequest), (401, errors.IdentityError), (403, errors.Forbidden),
     (404, errors.NotFound), (409, errors.Conflict), (405, errors.ValetkeyError),
     (500, errors.ValetkeyError), (503, errors.ValetkeyError)],
)
def test_an_unknown_code_keeps_its_code_on_the_base_class(
    status: int, cls: type[errors.ValetkeyError]
) -> None:
    """An unknown code becomes the status's base class (else ValetkeyError), keeping its code."""
    err = error_for_code("brand_new_refusal", "no", status, {"hint": 1})
    assert type(err) is cls
    assert (err.code, err.message, err.details) == ("brand_new_refusal", "no", {"hint": 1})
    assert cls.code != "brand_new_refusal"  # the class itself is untouched
    assert set(STATUS_FALLBACK.values()) <= set(ERROR_CLASSES.values())


def test_codes_the_http_layer_sends_are_classes_or_framework_codes() -> None:
    """Every code server.errors writes itself is a class's code, or one of the few framework codes."""
    sent = {*server_errors._STATUS_CODES.values(), "http_error", "internal_error"}
    assert sent - set(ERROR_CLASSES) == FRAMEWORK_CODES
    assert not FRAMEWORK_CODES & set(ERROR_CLASSES)


def test_the_table_does_not_depend_on_what_is_imported() -> None:
    """In a fresh process that loads only the table, identity and crypto codes still map
    to their classes, and neither joserfc nor cryptography is loaded."""
    code = (
        "import json, sys\n"
        "from valetkey.error_codes import error_for_code\n"
        "names = [type(error_for_code(c, 'm', 500, {})).__name__\n"
        "         for c in ('token_expired', 'decryption_failed', 'verification_failed')]\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'joserfc', 'cryptography'})\n"
        "print(json.dumps([names, heavy]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [["TokenExpired", "DecryptionError", "VerificationFailed"], []]


def test_every_error_that_asks_the_user_to_consent_again_is_a_user_authorization_required() -> None:
    """A refused or expired consent is caught by `except UserAuthorizationRequired` (docs/user-consent.md);
    a pending one is not (the app waits instead of starting another)."""
    for cls in (errors.AccessDenied, errors.AuthorizationExpired):
        assert issubclass(cls, errors.UserAuthorizationRequired), cls
        assert type(error_for_code(cls.code, "m", cls.status, {})) is cls
    assert not issubclass(errors.AuthorizationPending, errors.UserAuthorizationRequired)
