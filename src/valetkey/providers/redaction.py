"""Keep the secrets a provider call carried out of everything the provider says back.

A provider may quote what it was sent (a refresh token in ``error_description``, the
client secret in an HTML error page, the authorization code in an exception message).
One :class:`Redactor` is built per outbound call from every secret value that call
carried, and every provider-originated text goes through :meth:`Redactor.text` before it
is put in an error, and so before it can reach the app, the audit log, a webhook or a log.

- By value, in the encodings a provider might echo: as sent, form- and URL-encoded
  (either hex case), JSON-escaped (also with ``\\/``), HTML-escaped, base64 (standard and
  URL-safe, padded or not), and the ``Authorization: Basic`` header value and its
  credential. Matching is case-insensitive.
- Also partially: any run of :data:`MIN_LENGTH` characters of one of those forms is
  replaced, so a provider quoting a token's first 20 characters leaks none of them.
- Values shorter than :data:`MIN_LENGTH` are never substituted (a one-character secret
  would mangle every message). When one occurs in the text as a whole word (letters,
  digits, ``_`` and ``-`` make up words), the whole text is withheld instead: the error
  code still says what happened.
- Provider text is also stripped of control and format characters (which could hide a
  value from matching or forge log lines) and bounded to :data:`MAX_TEXT` characters,
  after redaction, so a cut never leaves a fragment of a value.
"""

from __future__ import annotations

import base64
import html
import json
import re
import unicodedata
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

__all__ = ["MAX_TEXT", "MIN_LENGTH", "REDACTED", "WITHHELD", "Redactor"]

#: Values at least this long are substituted; any run this long of one is too.
MIN_LENGTH = 8
#: Longest provider text kept, after redaction (characters).
MAX_TEXT = 200
REDACTED = "********"
WITHHELD = "(withheld: the provider's text may quote a credential)"

_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}")
_SPACES = re.compile(r"\s+")
#: Unicode categories cleaned out before matching: controls and line separators become a
#: space; format characters (zero-width spaces, bidi overrides), surrogates and private use go.
_AS_SPACE = frozenset({"Cc", "Zl", "Zp"})
_DROPPED = frozenset({"Cf", "Cs", "Co"})


def _clean(c: str) -> str:
    category = unicodedata.category(c)
    if category in _AS_SPACE:
        return " "
    return "" if category in _DROPPED else c


def _lower(text: str) -> str:
    """``text`` lower-cased character by character, keeping every index where it was."""
    return "".join(c if len(low := c.lower()) != 1 else low for c in text)


def _encodings(value: str) -> set[str]:
    """The forms in which a provider might quote ``value`` back."""
    forms = {value}
    for encoded in (quote_plus(value, safe=""), quote(value, safe=""), quote(value)):
        forms.add(encoded)
        forms.add(_PERCENT.sub(lambda m: m.group(0).lower(), encoded))
    for escaped in (json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]):
        forms.add(escaped)
        forms.add(escaped.replace("/", "\\/"))
    forms.add(html.escape(value))
    raw = value.encode("utf-8", "surrogatepass")
    for b64 in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        text = b64.decode("ascii")
        forms.add(text)
        forms.add(text.rstrip("="))
    return forms


class Redactor:
    """Removes a fixed set of secret values from text; built once per outbound call."""

    __slots__ = ("_grams", "_short")

    def __init__(self, secrets: Iterable[str]) -> None:
        grams: set[str] = set()
        short: set[str] = set()
        for secret in secrets:
            if not secret:
                continue
            if len(secret) < MIN_LENGTH:
                short.add(secret)
                short.add(quote_plus(secret, safe=""))
                continue
            for form in _encodings(secret):
                low = _lower(form)
                grams.update(low[i : i + MIN_LENGTH] for i in range(len(low) - MIN_LENGTH + 1))
        self._grams = frozenset(grams)
        self._short = tuple(
            re.compile(rf"(?<![0-9A-Za-z_-]){re.escape(s)}(?![0-9A-Za-z_-])") for s in sorted(short)
        )

    def __repr__(self) -> str:
        return f"Redactor({len(self._grams)} fragments, {len(self._short)} short values)"

    def redact(self, text: str) -> str:
        """``text`` with every run of a secret's characters replaced by ``********``."""
        if any(pattern.search(text) for pattern in self._short):
            return WITHHELD
        if not self._grams or len(text) < MIN_LENGTH:
            return text
        low = _lower(text)
        spans: list[list[int]] = []
        for i in range(len(low) - MIN_LENGTH + 1):
            if low[i : i + MIN_LENGTH] in self._grams:
                end = i + MIN_LENGTH
                if spans and i <= spans[-1][1]:
                    spans[-1][1] = end
                else:
                    spans.append([i, end])
        if not spans:
            return text
        out: list[str] = []
        at = 0
        for start, end in spans:
            out.append(text[at:start])
            out.append(REDACTED)
            at = end
        out.append(text[at:])
        return "".join(out)

    def text(self, value: object, limit: int = MAX_TEXT) -> str | None:
        """Provider text made safe to show: None unless a non-empty string; cleaned, redacted, bounded."""
        if not isinstance(value, str):
            return None
        cleaned = "".join(_clean(c) for c in value)
        cleaned = _SPACES.sub(" ", self.redact(cleaned)).strip()
        if not cleaned:
            return None
        if len(cleaned) > limit:
            cleaned = cleaned[: limit - 1].rstrip() + "…"
        return cleaned
