"""An independent OIDC issuer on an ephemeral 127.0.0.1 port, for tests.

A small ``http.server`` in a thread: it serves a discovery document and a JWKS, signs
its own tokens, and counts every request, so tests can see exactly when the broker
goes to the network. Independent of Valetkey's own issuer code.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from joserfc import jwt
from joserfc.jwk import ECKey

from valetkey.core.clock import FrozenClock

AUDIENCE = "valetkey"


class LoopbackIssuer:
    """An OIDC issuer on an ephemeral 127.0.0.1 port: its keys, documents and request counts."""

    def __init__(self) -> None:
        self.keys: list[ECKey] = [self.new_key("k1")]
        self.requests: Counter[str] = Counter()
        self.discovery_issuer: str | None = None  # None: the real URL
        self._lock = threading.Lock()
        state = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with state._lock:
                    state.requests[self.path] += 1
                    body = state.document(self.path)
                if body is None:
                    self.send_error(404)
                    return
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @staticmethod
    def new_key(kid: str) -> ECKey:
        return ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256", "use": "sig"})

    def document(self, path: str) -> dict[str, Any] | None:
        if path == "/.well-known/openid-configuration":
            return {
                "issuer": self.discovery_issuer or self.url,
                "jwks_uri": self.url + "/.well-known/jwks",
                "id_token_signing_alg_values_supported": ["ES256"],
            }
        if path == "/.well-known/jwks":
            return {"keys": [dict(k.as_dict(private=False)) for k in self.keys]}
        return None

    @property
    def jwks_fetches(self) -> int:
        return self.requests["/.well-known/jwks"]

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def rotate(self, kid: str) -> ECKey:
        """Publish a new key and retire the old ones, as issuers do on rotation."""
        key = self.new_key(kid)
        with self._lock:
            self.keys = [key]
        return key

    def sign(self, clock: FrozenClock, key: ECKey | None = None, **claims: Any) -> str:
        key = key or self.keys[0]
        now = int(clock.timestamp())
        body = {
            "iss": self.url,
            "aud": AUDIENCE,
            "sub": "system:serviceaccount:agents:runner",
            "kubernetes.io/namespace": "agents",
            "iat": now,
            "nbf": now,
            "exp": now + 600,
            **claims,
        }
        return jwt.encode({"alg": "ES256", "kid": key.kid}, body, key, algorithms=["ES256"])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
