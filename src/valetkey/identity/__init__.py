"""Workload-identity verification and the broker's own issuer (DESIGN §5).

Modules with fixed roles: ``errors`` (one class per refusal), ``verify`` (JWT
signature, then claim policy), ``jwks`` (remote issuers' keys), ``bindings``
(trust bindings), ``access_tokens``, ``keys`` and ``issuer`` (the broker's own
signing keys and tokens), and ``verifier`` (the one entry point the server calls).
"""
