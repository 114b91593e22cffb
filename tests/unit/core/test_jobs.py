"""The job queue's retry schedule and the worker's own rules (``valetkey.core.jobs``), without a store."""

from __future__ import annotations

from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from valetkey.core.clock import FrozenClock
from valetkey.core.jobs import JobQueue, JobWorker, RetryPolicy, backoff


@given(
    attempts=st.integers(min_value=1, max_value=200),
    base=st.floats(min_value=0.01, max_value=60),
    cap=st.floats(min_value=60, max_value=86400),
    unit=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_backoff_is_exponential_capped_and_jittered_within_half_to_full(
    attempts: int, base: float, cap: float, unit: float
) -> None:
    """After attempt n the wait is in [d/2, d] for d = min(cap, base * 2**(n-1))."""
    policy = RetryPolicy(base, cap)
    full = min(cap, base * 2 ** (attempts - 1))
    wait = backoff(attempts, policy, rand=lambda: unit)
    assert full / 2 <= wait <= full


def test_backoff_jitter_spreads_the_waits() -> None:
    """Without an injected random source, waits after the same attempt differ and stay in bounds."""
    policy = RetryPolicy(1.0, 3600.0)
    waits = {backoff(5, policy) for _ in range(200)}
    assert len(waits) > 150
    assert all(8 <= w <= 16 for w in waits)


def test_a_lease_that_does_not_outlast_the_job_timeout_is_refused() -> None:
    """A lease no longer than a job's deadline would let a second worker take a live worker's job."""
    queue = cast(JobQueue, object())  # never used: refused in the constructor
    with pytest.raises(ValueError, match="outlast"):
        JobWorker(queue, FrozenClock(), worker_id="w", job_timeout=30, lease_seconds=30)
