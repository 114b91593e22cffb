"""What the root command hands its subcommands: the data directory and a broker client."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from valetkey.cli.broker import BrokerClient, find_credentials

__all__ = ["State", "broker", "state"]


@dataclass
class State:
    data_dir: Path | None = None


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


def broker(ctx: typer.Context) -> BrokerClient:
    """A management API client with the member credential found for this invocation."""
    client = BrokerClient(find_credentials(state(ctx).data_dir))
    ctx.call_on_close(client.close)
    return client
