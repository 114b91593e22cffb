"""The token cache: keys, validity buffer, bounds, precise eviction, and no cached failures."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sdk_helpers import FakeBroker, TickingClock

from valetkey.errors import BrokerUnavailable, InvalidRequest
from valetkey.sdk.cache import TokenCache, normalize_scopes, normalize_strings
from valetkey.sdk.client import AsyncClient, Client
from valetkey.sdk.types import ConnectorRef, TokenResponse


def test_scope_order_and_duplicates_share_an_entry(client: Client, broker: FakeBroker) -> None:
    """Scopes in any order, repeated, or as a space-separated string hit the same entry."""
    first = client.get_token("slack/mybot", scopes=["b", "a"])
    assert client.get_token("slack/mybot", scopes=["a", "b", "a"]) == first
    assert client.get_token("slack/mybot", scopes=("b", "a")) == first
    assert client.get_token("slack/mybot", scopes="a b") == first
    assert len(broker.token_calls) == 1


def test_star_scope_is_the_default_request(client: Client, broker: FakeBroker) -> None:
    """scopes=['*'] and no scopes are the same request."""
    assert client.get_token("slack/mybot", scopes=["*"]) == client.get_token("slack/mybot")
    assert len(broker.token_calls) == 1


def test_request_fields_partition_the_cache(client: Client, broker: FakeBroker) -> None:
    """Each field that changes the credential (subject, scopes, install, resources,
    audience, uid) gets its own entry."""
    variants: list[dict[str, object]] = [
        {},
        {"user": "alice"},
        {"scopes": ["a"]},
        {"installation_id": "T1"},
        {"resources": ["https://r"]},
        {"audience": "aud"},
    ]
    tokens = {client.get_token("slack/mybot", **v) for v in variants}  # type: ignore[arg-type]
    tokens.add(client.get_token("slack/other"))
    assert len(tokens) == len(variants) + 1
    for v in variants:
        client.get_token("slack/mybot", **v)  # type: ignore[arg-type]
    assert len(broker.token_calls) == len(variants) + 1


def test_different_identity_gets_a_different_entry(broker: FakeBroker, clock: TickingClock) -> None:
    """A token minted for one caller identity is never served to another."""
    current = ["id-one"]
    with Client(identity=lambda: current[0], clock=clock, transport=broker.transport()) as c:
        one = c.get_token("slack/mybot")
        current[0] = "id-two"
        two = c.get_token("slack/mybot")
        current[0] = "id-one"
        assert c.get_token("slack/mybot") == one
    assert one != two
    assert [s.authorization for s in broker.token_calls] == ["Bearer id-one", "Bearer id-two"]


def test_validity_buffer(broker: FakeBroker, clock: TickingClock) -> None:
    """An entry is served while it stays valid longer than the buffer, then refetched."""
    broker.lifetime = 100
    with Client(
        identity="i", clock=clock, validity_buffer=timedelta(seconds=30),
        transport=broker.transport(),
    ) as client:
        first = client.get_token("slack/mybot")
        clock.advance(69)  # 31 s left
        assert client.get_token("slack/mybot") == first
        clock.advance(1)  # 30 s left: not more than the buffer
        assert client.get_token("slack/mybot") != first
    assert len(broker.token_calls) == 2


def test_default_buffer_is_30_seconds(client: Client, broker: FakeBroker, clock: TickingClock
                                      ) -> None:
    """Without configuration, a token is refetched once 30 s or less of it remain."""
    broker.lifetime = 60
    first = client.get_token("slack/mybot")
    clock.advance(29)
    assert client.get_token("slack/mybot") == first
    clock.advance(1)
    assert client.get_token("slack/mybot") != first


def test_force_refresh_and_no_cache(client: Client, broker: FakeBroker) -> None:
    """force_refresh fetches and replaces the entry; no_cache fetches and stores nothing."""
    first = client.get_token("slack/mybot")
    second = client.get_token("slack/mybot", force_refresh=True)
    assert second != first
    assert client.get_token("slack/mybot") == second
    third = client.get_token("slack/mybot", no_cache=True)
    assert third != second
    assert client.get_token("slack/mybot") == second
    assert len(broker.token_calls) == 3


def test_cache_is_bounded_lru(broker: FakeBroker, clock: TickingClock) -> None:
    """Past its size, the least recently used entry goes first."""
    with Client(identity="i", clock=clock, cache_size=2, transport=broker.transport()) as c:
        a = c.get_token("s/a")
        c.get_token("s/b")
        assert c.get_token("s/a") == a  # a is now the most recently used
        c.get_token("s/c")  # evicts b
        assert c.get_token("s/a") == a
        c.get_token("s/b")
    assert [s.path.rsplit("%2F", 1)[1] for s in broker.token_calls] == ["a", "b", "c", "b"]


def test_errors_are_not_cached(client: Client, broker: FakeBroker) -> None:
    """A refused request raises, and the next identical request goes to the broker again."""
    broker.script.append((503, {"error": {"code": "broker_unavailable", "message": "busy"}}))
    with pytest.raises(BrokerUnavailable):
        client.get_token("slack/mybot")
    assert client.get_token("slack/mybot").startswith("tok-")
    assert len(broker.token_calls) == 2


def test_revoking_a_user_evicts_only_that_user(client: Client, broker: FakeBroker) -> None:
    """Revoking alice's tokens drops alice's entries for that uid, not the app's or bob's."""
    app = client.get_token("slack/mybot")
    alice = client.get_token("slack/mybot", user="alice")
    alice_scoped = client.get_token("slack/mybot", user="alice", scopes=["x"])
    bob = client.get_token("slack/mybot", user="bob")
    other = client.get_token("slack/other", user="alice")
    client.revoke_tokens("slack/mybot", user="alice")
    assert client.get_token("slack/mybot") == app
    assert client.get_token("slack/mybot", user="bob") == bob
    assert client.get_token("slack/other", user="alice") == other
    assert client.get_token("slack/mybot", user="alice") != alice
    assert client.get_token("slack/mybot", user="alice", scopes=["x"]) != alice_scoped


def test_revoking_all_evicts_every_subject_of_that_uid(client: Client, broker: FakeBroker) -> None:
    """all_tokens drops every subject's entries for the uid, and only for that uid."""
    app = client.get_token("slack/mybot")
    alice = client.get_token("slack/mybot", user="alice")
    other = client.get_token("slack/other")
    client.revoke_tokens("slack/mybot", all_tokens=True)
    assert client.get_token("slack/other") == other
    assert client.get_token("slack/mybot") != app
    assert client.get_token("slack/mybot", user="alice") != alice


def test_revoke_by_connector_id_evicts_entries_requested_by_uid(
    client: Client, broker: FakeBroker
) -> None:
    """A revoke naming the connector's opaque id evicts entries that were requested by uid."""
    app = client.get_token("slack/mybot")
    client.revoke_tokens("con-slack/mybot", subject="app")
    assert client.get_token("slack/mybot") != app


def test_failed_revoke_still_evicts(client: Client, broker: FakeBroker) -> None:
    """Even when the revoke request fails, the local entries are gone."""
    app = client.get_token("slack/mybot")
    broker.script.append((503, b"down"))
    with pytest.raises(BrokerUnavailable):
        client.revoke_tokens("slack/mybot", subject="app")
    assert client.get_token("slack/mybot") != app


async def test_async_revoke_evicts(aclient: AsyncClient, broker: FakeBroker) -> None:
    """The async client evicts precisely on revoke too."""
    app = await aclient.get_token("slack/mybot")
    alice = await aclient.get_token("slack/mybot", user="alice")
    await aclient.revoke_tokens("slack/mybot", user="alice")
    assert await aclient.get_token("slack/mybot") == app
    assert await aclient.get_token("slack/mybot", user="alice") != alice


def _response(uid: str = "s/a") -> TokenResponse:
    return TokenResponse("t", None, "tid", ConnectorRef("cid", uid, "api-key"))


def _key(uid: str = "s/a", subject: str = "app") -> tuple:  # type: ignore[type-arg]
    return ("http://b", "digest", uid, subject, None, None, None, None)


def test_load_racing_an_eviction_is_not_stored() -> None:
    """A load that began before a revoke of its uid does not put its token in the cache."""
    cache = TokenCache()
    generation = cache.generation("s/a")
    assert cache.evict("s/a", "user:alice") == 0
    assert cache.put(_key(), _response(), float("inf"), generation) is False
    assert len(cache) == 0
    assert cache.put(_key(), _response(), float("inf"), cache.generation("s/a")) is True
    unrelated = cache.generation("s/b")
    cache.evict("s/a", None)
    assert cache.put(_key("s/b"), _response("s/b"), float("inf"), unrelated) is True


def test_clear_cancels_loads_in_flight() -> None:
    """clear() drops every entry and keeps loads already running from storing."""
    cache = TokenCache()
    cache.put(_key(), _response(), float("inf"), cache.generation("s/a"))
    generation = cache.generation("s/z")
    cache.clear()
    assert len(cache) == 0
    assert cache.put(_key("s/z"), _response("s/z"), float("inf"), generation) is False


def test_normalizers() -> None:
    """Scopes and resources normalize to sorted unique tuples and refuse non-strings."""
    assert normalize_scopes(["b", "a", "b"]) == ("a", "b")
    assert normalize_scopes("repo  read:org") == ("read:org", "repo")
    assert normalize_scopes(["*"]) is None
    assert normalize_strings("https://one", "resources") == ("https://one",)
    with pytest.raises(InvalidRequest):
        normalize_strings([1], "resources")  # type: ignore[list-item]
    with pytest.raises(InvalidRequest):
        normalize_strings([""], "resources")
    with pytest.raises(InvalidRequest):
        normalize_scopes(42)  # type: ignore[arg-type]
