"""``deliver`` end to end: real channels against the local vendors, the pure policy
deciding retries, failover and the cost guard."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog

from dispatcher.notifications.channels import (
    Attempt,
    Channel,
    CostCaps,
    DeliveryPolicy,
    InMemoryCostCounters,
    OutcomeStatus,
    RetryPolicy,
    deliver,
)
from dispatcher.notifications.channels.aliyun import AliyunSmsChannel, AliyunVoiceChannel
from dispatcher.notifications.channels.http_sms import HttpSmsChannel
from dispatcher.notifications.channels.models import ChannelKind, DeliveryReceipt, Notice, ReceiptStatus
from dispatcher.notifications.channels.robots import RobotChannel
from dispatcher.notifications.channels.tencent import TencentSmsChannel
from tests.dispatcher.notifications.channels.conftest import (
    aliyun_sms_cfg,
    aliyun_voice_cfg,
    gateway_cfg,
    notice,
    robot_cfg,
    tencent_sms_cfg,
)
from tests.dispatcher.notifications.channels.fakes import FakeVendors

POLICY = DeliveryPolicy(
    retry=RetryPolicy(max_attempts_per_channel=3, base_delay_s=1, multiplier=2, max_delay_s=8, jitter=0.2),
    cost_guard=CostCaps(sms_per_call=2, voice_per_call=1, sms_per_hour=100, voice_per_hour=100),
    send_timeout_s=5,
)


class Sleeps:
    """Records the waits instead of waiting (the policy's delays are seconds long)."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
async def ch(vendors: FakeVendors, env: dict[str, str]) -> AsyncIterator[dict[str, Channel]]:
    channels: dict[str, Channel] = {
        "aliyun_sms": AliyunSmsChannel("aliyun_sms", aliyun_sms_cfg(vendors), env),
        "tencent_sms": TencentSmsChannel("tencent_sms", tencent_sms_cfg(vendors), env),
        "aliyun_voice": AliyunVoiceChannel("aliyun_voice", aliyun_voice_cfg(vendors), env),
        "gateway_sms": HttpSmsChannel("gateway_sms", gateway_cfg(vendors), env),
        "dingtalk": RobotChannel("dingtalk", robot_cfg("dingtalk"), env),
    }
    yield channels
    for channel in channels.values():
        await channel.aclose()


async def test_throttled_sms_fails_over_to_the_next_vendor_at_once(
    vendors: FakeVendors, ch: dict[str, Channel]
) -> None:
    vendors.script("SendSms", "throttled")
    sleeps = Sleeps()
    audit: list[Attempt] = []

    async def on_attempt(step: Attempt) -> None:
        audit.append(step)

    with structlog.testing.capture_logs() as logs:
        outcome = await deliver(
            notice(),
            [ch["aliyun_sms"], ch["tencent_sms"]],
            POLICY,
            InMemoryCostCounters(),
            on_attempt=on_attempt,
            sleep=sleeps,
        )
    assert outcome.status is OutcomeStatus.delivered and outcome.delivered_by == "tencent_sms"
    assert [(s.channel, s.number, s.receipt.status if s.receipt else None) for s in outcome.steps] == [
        ("aliyun_sms", 1, ReceiptStatus.throttled),
        ("tencent_sms", 1, ReceiptStatus.delivered),
    ]
    assert outcome.steps[0].decision.startswith("failover")
    assert audit == outcome.steps and sleeps.waits == [] and not outcome.alert
    assert "13812345678" not in repr(logs)


async def test_transient_failures_are_retried_with_backoff(
    vendors: FakeVendors, ch: dict[str, Channel]
) -> None:
    vendors.script("gateway", "server_error", "server_error")
    sleeps = Sleeps()
    counters = InMemoryCostCounters()
    outcome = await deliver(notice(), [ch["gateway_sms"]], POLICY, counters, sleep=sleeps, jitter=lambda: 0.5)
    assert outcome.status is OutcomeStatus.delivered
    assert [s.number for s in outcome.steps] == [1, 2, 3]
    assert sleeps.waits == [1.0, 2.0]
    assert len(vendors.of("gateway")) == 3
    assert len({s.params["id"] for s in vendors.of("gateway")}) == 1  # one idempotency key for all tries
    # the two 503 answers sent nothing: only the delivered message stays in the budget
    usage = counters.usage(ChannelKind.sms, 42, outcome.steps[-1].at)
    assert (usage.per_call, usage.last_hour) == (1, 1)


async def test_exhausted_retries_then_voice_and_invalid_template_moves_on(
    vendors: FakeVendors, ch: dict[str, Channel]
) -> None:
    vendors.script("SendSms", "server_error", "server_error", "server_error")
    vendors.script("SingleCallByTts", "bad_template")
    vendors.script("tencent:sms:SendSms", "ok")
    sleeps = Sleeps()
    outcome = await deliver(
        notice(),
        [ch["aliyun_sms"], ch["aliyun_voice"], ch["tencent_sms"]],
        POLICY.model_copy(update={"cost_guard": CostCaps()}),
        InMemoryCostCounters(),
        sleep=sleeps,
        jitter=lambda: 0.0,
    )
    assert outcome.status is OutcomeStatus.delivered and outcome.delivered_by == "tencent_sms"
    assert [(s.channel, s.number) for s in outcome.steps] == [
        ("aliyun_sms", 1),
        ("aliyun_sms", 2),
        ("aliyun_sms", 3),
        ("aliyun_voice", 1),
        ("tencent_sms", 1),
    ]
    assert sleeps.waits == [pytest.approx(0.8), pytest.approx(1.6)]  # 1 and 2 s, jitter -20 %


async def test_cost_guard_caps_sms_per_call_and_raises_an_alert(
    vendors: FakeVendors, ch: dict[str, Channel]
) -> None:
    counters = InMemoryCostCounters()
    outcomes = [
        await deliver(
            notice(recipient={"phone": f"+86138000000{i:02d}", "group": "station-1"}),
            [ch["aliyun_sms"], ch["dingtalk"]],
            POLICY,
            counters,
        )
        for i in range(3)
    ]
    assert [o.delivered_by for o in outcomes] == ["aliyun_sms", "aliyun_sms", "dingtalk"]
    assert len(vendors.of("aliyun", "SendSms")) == 2  # the third SMS never left
    third = outcomes[2]
    assert third.alert and third.steps[0].blocked_by_cost_guard and third.steps[0].receipt is None
    assert third.steps[0].decision == "failover: blocked_by_cost_guard: 2/2 per call"
    (alert,) = third.cost_alerts
    assert (alert.kind, alert.scope.value, alert.limit, alert.call_id) == (ChannelKind.sms, "call", 2, 42)
    # another call has its own per-call budget
    other = await deliver(notice(call_id=43), [ch["aliyun_sms"]], POLICY, counters)
    assert other.delivered_by == "aliyun_sms"


async def test_only_paid_channels_blocked_gives_blocked_by_cost_guard(
    vendors: FakeVendors, ch: dict[str, Channel]
) -> None:
    policy = POLICY.model_copy(update={"cost_guard": CostCaps(sms_per_call=0, voice_per_call=0)})
    outcome = await deliver(notice(), [ch["aliyun_sms"], ch["aliyun_voice"]], policy, InMemoryCostCounters())
    assert outcome.status is OutcomeStatus.blocked_by_cost_guard and outcome.alert
    assert [a.kind for a in outcome.cost_alerts] == [ChannelKind.sms, ChannelKind.voice]
    assert vendors.seen == []


async def test_hourly_cap_rolls_with_the_clock(vendors: FakeVendors, ch: dict[str, Channel]) -> None:
    policy = POLICY.model_copy(update={"cost_guard": CostCaps(sms_per_hour=1)})
    counters = InMemoryCostCounters()
    now = [1_000_000.0]

    def clock() -> float:
        return now[0]

    first = await deliver(notice(call_id=1), [ch["aliyun_sms"]], policy, counters, clock=clock)
    now[0] += 3599
    second = await deliver(notice(call_id=2), [ch["aliyun_sms"]], policy, counters, clock=clock)
    now[0] += 2
    third = await deliver(notice(call_id=3), [ch["aliyun_sms"]], policy, counters, clock=clock)
    assert [o.status for o in (first, second, third)] == [
        OutcomeStatus.delivered,
        OutcomeStatus.blocked_by_cost_guard,
        OutcomeStatus.delivered,
    ]
    assert second.cost_alerts[0].scope.value == "hour"


class _Broken:
    kind = ChannelKind.app

    def __init__(self, name: str, hang: bool) -> None:
        self.name = name
        self.hang = hang

    async def send(self, notice: Notice) -> DeliveryReceipt:
        if self.hang:
            await asyncio.sleep(30)
        raise RuntimeError("plugin bug")

    async def aclose(self) -> None:
        return None


async def test_a_raising_or_hanging_channel_does_not_stop_the_ladder(
    vendors: FakeVendors, ch: dict[str, Channel]
) -> None:
    policy = POLICY.model_copy(
        update={
            "send_timeout_s": 1.0,  # the working channel must never hit it on a busy machine
            "retry": RetryPolicy(max_attempts_per_channel=2, base_delay_s=0, max_delay_s=0, jitter=0),
        }
    )
    outcome = await deliver(
        notice(),
        [_Broken("raises", False), _Broken("hangs", True), ch["dingtalk"]],
        policy,
        InMemoryCostCounters(),
    )
    assert outcome.delivered_by == "dingtalk"
    codes = [(s.channel, s.receipt.error_code if s.receipt else None) for s in outcome.steps]
    # a plugin bug is not retried; a timeout is
    assert codes == [
        ("raises", "channel_error"),
        ("hangs", "timeout"),
        ("hangs", "timeout"),
        ("dingtalk", None),
    ]


async def test_no_channel_and_all_failed(vendors: FakeVendors, ch: dict[str, Channel]) -> None:
    assert (await deliver(notice(), [], POLICY, InMemoryCostCounters())).status is OutcomeStatus.no_channel
    vendors.script("SendSms", "bad_template")
    outcome = await deliver(notice(), [ch["aliyun_sms"]], POLICY, InMemoryCostCounters())
    assert outcome.status is OutcomeStatus.failed and outcome.delivered_by is None
