"""Fixtures for the SDK tests: a clean environment, a broker stand-in, and clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sdk_helpers import FakeBroker, TickingClock

from valetkey.sdk import default
from valetkey.sdk.client import AsyncClient, Client

_ENV = (
    "VALETKEY_TOKEN",
    "VALETKEY_OIDC_TOKEN",
    "VALETKEY_OIDC_TOKEN_FILE",
    "VALETKEY_URL",
    "VALETKEY_AUDIENCE",
    "ACTIONS_ID_TOKEN_REQUEST_URL",
    "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No identity leaks in from the machine: no VALETKEY_/GitHub variables, an empty cwd."""
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    default.reset_default_clients()
    yield
    default.reset_default_clients()


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock()


@pytest.fixture
def broker(clock: TickingClock) -> FakeBroker:
    return FakeBroker(now=clock.timestamp)


@pytest.fixture
def client(broker: FakeBroker, clock: TickingClock) -> Iterator[Client]:
    with Client(identity="id-alpha", clock=clock, transport=broker.transport()) as c:
        yield c


@pytest.fixture
async def aclient(broker: FakeBroker, clock: TickingClock) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(
        identity="id-alpha", clock=clock, transport=broker.async_transport()
    ) as c:
        yield c
