"""What the OpenAPI schema says beyond FastAPI's defaults: the Connect API's bodies and the error envelope.

The Connect API parses its bodies by hand (``server.wire``), so FastAPI cannot see them; the
schemas here document them for clients and for the schema-driven fuzz tests. Every refusal is
``{"error": {"code", "message", ...}}`` with status 400 (never FastAPI's default 422), so each
operation documents that envelope for ``4XX`` instead of ``HTTPValidationError``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AUTHORIZE_BODY",
    "CONFIRM_BODY",
    "IMPORT_BODY",
    "REVOKE_BODY",
    "STATUS_BODY",
    "TOKEN_BODY",
    "document_errors",
]

_TEXT: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": 200}
_LIST: dict[str, Any] = {"type": "array", "items": {"type": "string"}, "maxItems": 100}
_SUBJECT: dict[str, Any] = {
    "oneOf": [
        {
            "type": "object",
            "properties": {"type": {"const": "app"}},
            "required": ["type"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "type": {"const": "user"},
                "id": _TEXT,
                # Who issued the id (absent: the app's own users); the link must accept it.
                "issuer": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": "^[\\x21-\\x7b\\x7d\\x7e]+$",
                },
            },
            "required": ["type", "id"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "type": {"const": "jwt-bearer"},
                "sub": _TEXT,
                "iss": {"type": "string"},
                "aud": {"type": "string"},
                "additionalClaims": {"type": "object", "maxProperties": 32},
            },
            "required": ["type", "sub"],
            "additionalProperties": False,
        },
        {
            "type": "object",
            "properties": {
                "type": {"const": "token"},
                "token": {"type": "string", "minLength": 1, "maxLength": 16384},
                "tokenType": {"type": "string", "pattern": "^urn:"},
            },
            "required": ["type", "token"],
            "additionalProperties": False,
        },
    ]
}
_USER: dict[str, Any] = _SUBJECT["oneOf"][1]


def _body(
    properties: dict[str, Any], required: list[str], *, body_required: bool = True
) -> dict[str, Any]:
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return {
        "requestBody": {
            "required": body_required,
            "content": {"application/json": {"schema": schema}},
        }
    }


_BUFFER_MS: dict[str, Any] = {
    "type": "integer",
    "minimum": 0,
    "maximum": 86_400_000,
    "description": "the TypeScript SDK's cache margin; bounded, otherwise ignored",
}
TOKEN_BODY = _body(
    {
        "subject": _SUBJECT,
        "scopes": {"anyOf": [_LIST, {"type": "string"}]},
        "installationId": _TEXT,
        "resources": _LIST,
        "audience": {"anyOf": [{"type": "string"}, _LIST]},
        "authorizationDetails": {"type": "array"},
        "validityBufferMs": _BUFFER_MS,
    },
    ["subject"],
)
REVOKE_BODY = _body(
    {"subject": _SUBJECT, "installationId": _TEXT, "allTokens": {"type": "boolean"}},
    [],
    body_required=False,
)
AUTHORIZE_BODY = _body(
    {
        "subject": _USER,
        "scopes": {"anyOf": [_LIST, {"type": "string"}]},
        "returnUrl": {"type": "string", "format": "uri"},
        "callbackUrl": {"type": "string", "format": "uri"},
        "webhook": {"type": "string", "format": "uri"},
        "deviceCode": {"type": "boolean"},
        "expiresInMs": {"type": "integer"},
        "installationId": _TEXT,
        "loginHint": {"type": "string"},
        "prompt": {
            "type": "string",
            "maxLength": 200,
            "description": "OpenID Connect prompt, forwarded to the provider",
        },
        "audience": {"anyOf": [{"type": "string"}, _LIST]},
        "resources": _LIST,
        "authorizationDetails": {"type": "array"},
        "validityBufferMs": _BUFFER_MS,
    },
    ["subject"],
)
CONFIRM_BODY = _body(
    {
        "request": {"type": "string", "minLength": 1, "maxLength": 64},
        "verifier": {"type": "string", "minLength": 1, "maxLength": 256},
    },
    ["request", "verifier"],
)
STATUS_BODY = _body({"request": {"type": "string", "minLength": 1, "maxLength": 64}}, ["request"])
IMPORT_BODY = _body(
    {
        "subject": _USER,
        "accessToken": {"type": "string", "minLength": 1, "maxLength": 16384},
        "refreshToken": {"type": "string", "minLength": 1, "maxLength": 16384},
        "expiresAt": {"type": "integer", "description": "epoch milliseconds"},
        "expiresIn": {"type": "integer", "description": "seconds"},
        "scopes": {"anyOf": [_LIST, {"type": "string"}]},
        "project": {"type": "string", "description": "with a member credential"},
        "environment": {"type": "string", "description": "with a member credential"},
    },
    ["subject", "accessToken"],
)

_ERROR_ENVELOPE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "required": ["code", "message"],
        }
    },
    "required": ["error"],
}


def document_errors(schema: dict[str, Any]) -> dict[str, Any]:
    """Replace FastAPI's 422 ``HTTPValidationError`` with the ``4XX`` error envelope, on every operation."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorEnvelope"] = _ERROR_ENVELOPE
    for key in ("HTTPValidationError", "ValidationError"):
        components.pop(key, None)
    error = {
        "description": "Refused: the error envelope names the code, the reason and the field",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorEnvelope"}}},
    }
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            responses.pop("422", None)
            responses["4XX"] = error
    return schema
