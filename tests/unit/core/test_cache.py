"""The bounded cache: entries expire, the oldest go first beyond the cap, reloads stay young."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from valetkey.core.cache import BoundedCache

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_an_entry_lives_until_its_expiry() -> None:
    """An entry is a hit before its expiry and a miss (and dropped) from it on."""
    cache: BoundedCache[str, int] = BoundedCache(10)
    cache.put("a", 1, T0 + timedelta(seconds=5))
    assert cache.get("a", T0 + timedelta(seconds=4.9)) == 1
    assert cache.get("a", T0 + timedelta(seconds=5)) is None
    assert len(cache) == 0


def test_distinct_keys_beyond_the_cap_evict_the_oldest() -> None:
    """5,000 distinct long keys leave exactly the cap's number of entries, the newest ones."""
    cache: BoundedCache[str, bool] = BoundedCache(100)
    keys = [f"{i}-" + "x" * 1000 for i in range(5000)]
    for key in keys:
        cache.put(key, True, T0 + timedelta(seconds=5))
    assert len(cache) == 100
    assert cache.get(keys[-1], T0)
    assert cache.get(keys[0], T0) is None


def test_a_reloaded_entry_is_young_again() -> None:
    """Putting a key again moves it to the young end, so a busy key survives a flood."""
    cache: BoundedCache[str, int] = BoundedCache(3)
    until = T0 + timedelta(seconds=30)
    for key in ("busy", "b", "c"):
        cache.put(key, 1, until)
    cache.put("busy", 2, until)
    cache.put("d", 1, until)
    assert cache.get("busy", T0) == 2
    assert cache.get("b", T0) is None


def test_pop_and_clear() -> None:
    """pop drops one entry (a missing one is fine); clear drops all."""
    cache: BoundedCache[str, int] = BoundedCache(3)
    cache.put("a", 1, T0 + timedelta(seconds=1))
    cache.put("b", 1, T0 + timedelta(seconds=1))
    cache.pop("a")
    cache.pop("missing")
    assert cache.get("a", T0) is None
    assert cache.get("b", T0) == 1
    cache.clear()
    assert len(cache) == 0
