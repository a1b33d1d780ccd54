"""The dispatcher process's Prometheus counters (in the one registry of carecall.core.metrics)."""

from __future__ import annotations

from prometheus_client import Counter as PCounter
from prometheus_client import Histogram

from carecall.core.metrics import REGISTRY

CALLS_OPENED = PCounter(
    "carecall_dispatcher_events_handled_total",
    "Stored events handled, by decision",
    ["decision"],
    registry=REGISTRY,
)
TIMERS_FIRED = PCounter(
    "carecall_dispatcher_timers_total", "Escalation timers, by result", ["result"], registry=REGISTRY
)
TIMER_LATE = Histogram(
    "carecall_dispatcher_timer_late_seconds",
    "Timer fired-at minus due-at",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
    registry=REGISTRY,
)
NOTIFY = PCounter(
    "carecall_dispatcher_notifications_total",
    "Outbox deliveries, by channel and result",
    ["channel", "result"],
    registry=REGISTRY,
)

HANDLING_FAILED = PCounter(
    "carecall_dispatcher_handling_failures_total",
    "Failed attempts to handle a stored event or fire a timer (a bug or bad data, not an"
    " unavailable database), by kind",
    ["kind"],
    registry=REGISTRY,
)
SET_ASIDE = PCounter(
    "carecall_dispatcher_set_aside_total",
    "Events and timers set aside as 'could not be processed' after repeated failures, by kind",
    ["kind"],
    registry=REGISTRY,
)
DB_UNAVAILABLE = PCounter(
    "carecall_dispatcher_db_unavailable_total",
    "Loop rounds that found the database unavailable, by loop",
    ["task"],
    registry=REGISTRY,
)
