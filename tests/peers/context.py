"""What the broker lends a provider, built for tests: a ProviderContext and a Connector."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2

from valetkey.core.clock import Clock, FrozenClock
from valetkey.core.models import Connector
from valetkey.core.providers import Provider

__all__ = ["TestContext", "connector_for"]

_EPOCH = datetime(2030, 1, 1, tzinfo=UTC)


@dataclass
class TestContext:
    """A ProviderContext: a real httpx2 client and a frozen clock."""

    __test__ = False  # not a pytest test class

    http: httpx2.AsyncClient
    clock: Clock = field(default_factory=lambda: FrozenClock(_EPOCH))


def connector_for(
    provider: Provider, data: Mapping[str, Any], *, service: str | None = None, name: str = "test"
) -> Connector:
    """A connector whose configuration went through the provider's own validation."""
    validated = provider.validate_config(data)
    service = service or provider.services[0]
    return Connector(
        id=f"con_{name}",
        team_id="team_test",
        uid=f"{service}/{name}",
        service=service,
        name=name,
        type=provider.type,
        config=validated.config,
        secrets=validated.secrets,
        created_at=_EPOCH,
        updated_at=_EPOCH,
    )
