"""Workload-identity verification and the broker's own issuer (DESIGN §5).

Modules with fixed roles: ``errors`` (one class per refusal), ``jwt`` (one JWT's
signature, then its claims against one issuer's policy), ``jwks`` (remote issuers'
keys), ``bindings`` (trust bindings and the algorithms they may allow),
``access_tokens``, ``keys`` and ``issuer`` (the broker's own signing keys and
tokens), and ``verifier`` (the one entry point the server calls: any bearer to an
``Identity``, choosing the issuer, the keys and the binding).
"""
