"""``GET /metrics``: the broker's operations metrics in the Prometheus text format (DESIGN §4).

Each app gets its own ``CollectorRegistry`` (never the process-global one), so several brokers
in one process report separately. Nothing is counted here on the request path: the exchange
keeps plain integers (``ExchangeCounts``) and a collector reads them, the audit backlog, the
token cache size and the job queue's counts (refreshed by the job worker) when Prometheus
scrapes. Labels hold decisions and error codes only, never a tenant, project, connector, user
or secret.

The endpoint needs no credential: serve it on an internal network (docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import FastAPI
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from valetkey.error_codes import ERROR_CLASSES
from valetkey.server.broker import Broker

__all__ = ["OTHER_REASON", "BrokerCollector", "install", "registry_for"]

#: The ``reason`` label of a refusal whose code is not one of Valetkey's error classes.
OTHER_REASON = "other"


#: Every error code a broker sends (the bounded set a ``reason`` label may take).
_KNOWN_CODES = frozenset(ERROR_CLASSES)


class BrokerCollector:
    """Reads one broker's counters and gauges at scrape time."""

    def __init__(self, broker: Broker) -> None:
        self._broker = broker

    def describe(self) -> Iterable[Metric]:
        return [
            *self._families(),
            *self._audit_families(fill=False),
            *self._job_families(fill=False),
        ]

    def collect(self) -> Iterable[Metric]:
        counts = self._broker.exchange.counts
        requests, minted, revocations, backlog, cached = self._families()
        requests.add_metric(["allowed", "cache_hit"], counts.cache_hits)
        requests.add_metric(["allowed", "cache_miss"], counts.cache_misses)
        denied: dict[str, int] = {}
        for code, n in counts.denied.items():
            reason = code if code in _KNOWN_CODES else OTHER_REASON
            denied[reason] = denied.get(reason, 0) + n
        for reason, n in sorted(denied.items()):
            requests.add_metric(["denied", reason], n)
        minted.add_metric([], counts.tokens_minted)
        revocations.add_metric([], counts.revocations)
        backlog.add_metric([], self._broker.audit.backlog)
        cached.add_metric([], self._broker.exchange.cached_tokens)
        return [
            requests,
            minted,
            revocations,
            backlog,
            cached,
            *self._audit_families(fill=True),
            *self._job_families(fill=True),
        ]

    def _job_families(self, *, fill: bool) -> list[Metric]:
        """The job queue, shared by all replicas (counted by this replica's worker every few seconds)."""
        counts = self._broker.worker.counts
        families: list[Metric] = []
        for name, documentation, value in (
            ("valetkey_jobs_due", "Background jobs due now and not yet claimed.", counts.due),
            ("valetkey_jobs_running", "Background jobs claimed by a worker.", counts.running),
            (
                "valetkey_jobs_dead",
                "Background jobs dead-lettered (attempts exhausted): alert on any; GET /v1/jobs?status=dead.",
                counts.dead,
            ),
        ):
            gauge = GaugeMetricFamily(name, documentation)
            if fill:
                gauge.add_metric([], value)
            families.append(gauge)
        return families

    def _audit_families(self, *, fill: bool) -> list[Metric]:
        """The audit writer's health: limits, outcomes, failures, and when it last wrote."""
        audit = self._broker.audit
        stats = audit.stats
        gauges = [
            (
                "valetkey_audit_backlog_soft_limit",
                "Backlog above which audited requests wait for the audit writer.",
                audit.soft_limit,
            ),
            (
                "valetkey_audit_backlog_hard_limit",
                "Backlog at which audited requests are refused (503 audit_unavailable).",
                audit.hard_limit,
            ),
            (
                "valetkey_audit_writer_healthy",
                "1 while the audit writer keeps up (what /readyz checks), else 0.",
                1 if audit.problem() is None else 0,
            ),
            (
                "valetkey_audit_last_write_timestamp_seconds",
                "When an audit write last committed (Unix time; 0 before the first).",
                stats.last_write_at or 0,
            ),
        ]
        counters = [
            ("valetkey_audit_events_written", "Audit events written.", stats.written),
            (
                "valetkey_audit_events_clipped",
                "Audit events written in bounded form (too long for the columns, or refused whole).",
                stats.clipped,
            ),
            (
                "valetkey_audit_events_dropped",
                "Audit events the store refused even in bounded form, and so lost: alert on any.",
                stats.dropped,
            ),
            (
                "valetkey_audit_refused_writes",
                "Audit writes the store refused for their data (each then split to isolate it).",
                stats.refused_batches,
            ),
            (
                "valetkey_audit_flush_failures",
                "Audit flushes that failed with the store unavailable (retried with backoff).",
                stats.failed_flushes,
            ),
            (
                "valetkey_audit_requests_waited",
                "Audited requests that waited for the audit writer (backlog above the soft limit).",
                stats.waited_requests,
            ),
            (
                "valetkey_audit_requests_refused",
                "Audited requests refused because the audit backlog was full.",
                stats.refused_requests,
            ),
        ]
        families: list[Metric] = []
        for name, documentation, value in gauges:
            gauge = GaugeMetricFamily(name, documentation)
            if fill:
                gauge.add_metric([], value)
            families.append(gauge)
        for name, documentation, value in counters:
            counter = CounterMetricFamily(name, documentation)
            if fill:
                counter.add_metric([], value)
            families.append(counter)
        return families

    @staticmethod
    def _families() -> tuple[
        CounterMetricFamily,
        CounterMetricFamily,
        CounterMetricFamily,
        GaugeMetricFamily,
        GaugeMetricFamily,
    ]:
        return (
            CounterMetricFamily(
                "valetkey_token_requests",
                "Token exchanges by decision; reason is cache_hit/cache_miss or the refusal's error code.",
                labels=["decision", "reason"],
            ),
            CounterMetricFamily(
                "valetkey_tokens_minted",
                "Credentials minted at a provider (cache misses that minted).",
            ),
            CounterMetricFamily("valetkey_revocations", "Revocation requests completed."),
            GaugeMetricFamily(
                "valetkey_audit_backlog", "Audit events recorded in memory and not yet written."
            ),
            GaugeMetricFamily(
                "valetkey_cached_tokens",
                "Credentials held in this process's in-memory token cache.",
            ),
        )


def registry_for(broker: Broker) -> CollectorRegistry:
    """A registry of its own for ``broker``: its collector plus the process, GC and platform ones."""
    registry = CollectorRegistry()
    registry.register(BrokerCollector(broker))
    ProcessCollector(registry=registry)
    GCCollector(registry=registry)
    PlatformCollector(registry=registry)
    return registry


def install(app: FastAPI, broker: Broker) -> CollectorRegistry:
    """Serve ``GET /metrics`` for ``broker`` on ``app``; returns the registry it reads."""
    registry = registry_for(broker)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics (no credential: scrape internally)",
        response_class=PlainTextResponse,  # documents text/plain, not JSON (the fuzz tests check)
        responses={200: {"content": {"application/openmetrics-text": {}}}},
    )
    async def metrics(request: Request) -> Response:
        # The text format 0.0.4 unless the scraper asks for OpenMetrics (or a newer text format).
        # Collected on the event loop, where the counters are bumped: a consistent snapshot.
        encode, content_type = choose_encoder(request.headers.get("accept", ""))
        return Response(encode(registry), headers={"content-type": content_type})

    app.state.metrics = registry
    return registry
