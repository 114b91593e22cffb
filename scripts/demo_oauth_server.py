"""A local OAuth 2.0 / OpenID Connect server to try Valetkey against: ``make demo-oauth``.

It is the test suite's peer (panva's certified ``oidc-provider``, tests/peers/oidc_provider)
with one demo client, listening on 127.0.0.1 only. Sign-in accepts any name and password.
Never use it for anything but local tries.

    python scripts/demo_oauth_server.py [--port 9400] [--broker-url URL] [--redirect-uri URL ...]

The client ``demo-client`` / ``demo-secret`` may use client credentials, authorization code
(+ PKCE), the device authorization grant and refresh tokens (rotated on every use), with the
scopes ``read`` and ``write``. Its redirect URI is the broker's callback,
``<broker URL>/v1/connect/callback``, where the broker URL is found as the CLI finds it:
``--broker-url``, else ``VALETKEY_URL``, else the ``url`` in ``<data dir>/cli.json`` (which
``valetkey serve`` keeps current; data dir: ``--data-dir``, else ``VALETKEY_DATA_DIR``, else the
default), else http://127.0.0.1:8787. ``--redirect-uri`` names the redirect URIs instead.
It runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PEER_DIR = ROOT / "tests" / "peers" / "oidc_provider"
READY = "VALETKEY_PEER_READY "
DEVICE_CODE_GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def _cli_broker_url(data_dir: Path | None) -> str:
    try:
        from valetkey.cli.broker import broker_url
    except ImportError:  # run without the package installed: the default broker
        return "http://127.0.0.1:8787"
    return broker_url(data_dir)


def peer_config(args: argparse.Namespace) -> dict[str, Any]:
    """The peer's configuration (see tests/peers/oidc.py for the fields)."""
    return {
        "scopes": ["read", "write"],
        "clients": [
            {
                "client_id": args.client_id,
                "client_secret": args.client_secret,
                "grant_types": [
                    "client_credentials",
                    "authorization_code",
                    "refresh_token",
                    DEVICE_CODE_GRANT,
                ],
                "response_types": ["code"],
                "redirect_uris": args.redirect_uri or [f"{args.broker_url}/v1/connect/callback"],
                "token_endpoint_auth_method": "client_secret_basic",
                "scope": "openid offline_access read write",
            }
        ],
        "ttl": {"AccessToken": args.access_token_ttl, "ClientCredentials": args.access_token_ttl},
        "refreshTokens": {"rotate": True},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, default=9400)
    parser.add_argument("--client-id", default="demo-client")
    parser.add_argument("--client-secret", default="demo-secret")
    parser.add_argument(
        "--redirect-uri", action="append", help="Allowed redirect URIs (repeatable)."
    )
    parser.add_argument("--access-token-ttl", type=int, default=300, help="Seconds.")
    parser.add_argument("--broker-url", help="The broker's URL (default: as the CLI finds it).")
    parser.add_argument("--data-dir", type=Path, help="The broker's data directory (for cli.json).")
    args = parser.parse_args(argv)
    args.broker_url = (args.broker_url or _cli_broker_url(args.data_dir)).rstrip("/")

    node = shutil.which("node")
    if node is None:
        print("node is not on PATH: the demo server needs Node.js 20+", file=sys.stderr)
        return 1
    if not (PEER_DIR / "node_modules" / "oidc-provider").is_dir():
        print(f"{PEER_DIR}/node_modules is missing: run `make peers`", file=sys.stderr)
        return 1
    # SIGTERM ends it as Ctrl-C does: through the ``finally`` that stops the server.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    env = {**os.environ, "VALETKEY_OIDC_PEER_CONFIG": json.dumps(peer_config(args))}
    env.pop("NODE_OPTIONS", None)
    process = subprocess.Popen(  # noqa: S603 - a fixed argv, no shell
        [node, "server.mjs", str(args.port)],
        cwd=PEER_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        ready: dict[str, Any] | None = None
        for line in process.stdout:
            if line.startswith(READY):
                ready = json.loads(line[len(READY) :])
                break
            sys.stdout.write(line)
        if ready is None:
            print("the demo server did not start (is the port free?)", file=sys.stderr)
            return process.wait() or 1
        issuer = str(ready["issuer"])
        config = peer_config(args)["clients"][0]
        print(f"Demo OAuth server (oidc-provider), for local tries only: {issuer}")
        for name, value in (
            ("issuer", issuer),
            ("token endpoint", f"{issuer}/token"),
            ("client id", args.client_id),
            ("client secret", args.client_secret),
            ("redirect URIs", " ".join(config["redirect_uris"])),
            ("for broker", args.broker_url if not args.redirect_uri else "(--redirect-uri)"),
            ("grants", "client_credentials authorization_code device_code refresh_token"),
            ("scopes", "read write"),
        ):
            print(f"  {name:<15} {value}")
        print("Sign in with any name and any password. Ctrl-C stops it.", flush=True)
        for line in process.stdout:  # keep relaying what the server prints
            sys.stdout.write(line)
            sys.stdout.flush()
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    raise SystemExit(main())
