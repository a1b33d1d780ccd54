"""Load mode: a scenario's share for many devices, played over one privileged identity.

``plan_load`` fixes up front (reproducibly per seed) everything the scenario makes the
load part's devices do besides heartbeats; ``LoadRun`` plays that plan and the heartbeats
over one ``simulators.loadgen.LoadGenerator`` in a thread. ``simulators.fleet.run_fleet``
gives it the devices that do not fit in this process's descriptors.
"""

from __future__ import annotations

import itertools
import random
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from simulators.device import DeviceSpec
from simulators.loadgen import LoadGenerator, SentEvent, latency_summary
from simulators.runner import LatencySummary
from simulators.scenario import EMITTERS, Scenario


@dataclass(frozen=True, order=True)
class _Act:
    """One thing the load generator does at a simulated moment on behalf of a device."""

    at_s: float
    seq: int
    what: str  # "event", "drop", "back", "forever"
    device: int  # index into the load part's devices
    type: str = ""
    interval_s: float = 0.0
    max_sends: int = 0


def _event_data(event_type: str, rng: random.Random, *, night: bool, not_returned: float) -> dict[str, Any]:
    """Type-specific fields, shaped like the per-device simulator's."""
    if event_type == "vital_alert":
        high = rng.random() < 0.7
        return {
            "hr": rng.randint(125, 150) if high else rng.randint(35, 45),
            "rr": rng.randint(24, 32) if high else rng.randint(5, 8),
        }
    if event_type == "inactivity":
        return {"minutes": rng.randint(120, 480)}
    if event_type == "bed_exit":
        return {"returned": not (night and rng.random() < not_returned)}
    if event_type == "low_battery":
        return {"battery_pct": rng.randint(8, 15)}
    return {}


class _Planner:
    """The plan being built: actions in the order drawn, bounded by time and count."""

    def __init__(self, duration_s: float, max_actions: int) -> None:
        self.duration_s = duration_s
        self.max_actions = max_actions
        self.acts: list[_Act] = []
        self._seq = itertools.count()

    @property
    def full(self) -> bool:
        return len(self.acts) >= self.max_actions

    def add(self, at_s: float, what: str, device: int, **kw: Any) -> None:
        if at_s < self.duration_s and len(self.acts) < self.max_actions:
            self.acts.append(_Act(at_s, next(self._seq), what, device, **kw))


def plan_load(
    scenario: Scenario,
    specs: Sequence[DeviceSpec],
    duration_s: float,
    *,
    seed: int = 1,
    start: datetime | None = None,
    max_actions: int = 2_000_000,
) -> list[_Act]:
    """Everything the scenario makes the load part's devices do besides heartbeats, fixed up
    front (reproducible per seed): Poisson events per kind with the day/night rhythm,
    random drops, the burst, the power cut, scripted events, flapping and resending
    devices. Bounded by ``max_actions``."""
    rng = random.Random(f"{seed}:load-plan")
    plan = _Planner(duration_s, max_actions)
    by_kind: dict[str, list[int]] = {}
    for i, spec in enumerate(specs):
        by_kind.setdefault(spec.kind, []).append(i)
    # one random stream, drawn in this order: the same seed gives the same plan
    _plan_events(plan, scenario, by_kind, rng, start or datetime.now(UTC))
    _plan_drops(plan, scenario, len(specs), rng)
    _plan_burst(plan, scenario, specs, by_kind, rng)
    _plan_power_cut(plan, scenario, specs, rng)
    _plan_stories(plan, scenario, specs, by_kind)
    plan.acts.sort()
    return plan.acts


def _plan_events(
    plan: _Planner, scenario: Scenario, by_kind: dict[str, list[int]], rng: random.Random, start: datetime
) -> None:
    """Poisson events per kind, day/night-modulated by thinning (as ``simulators.runner``)."""
    tz = ZoneInfo(scenario.timezone)

    def night_at(at_s: float) -> bool:
        moment = start + timedelta(seconds=at_s)
        return scenario.day_night_rhythm and scenario.night.contains(moment.astimezone(tz).hour)

    for kind, members in sorted(by_kind.items()):
        peak = scenario.peak_rate_per_s(kind) * len(members)
        types = sorted(scenario.rates.get(kind, {}))
        at_s = 0.0
        while peak > 0 and not plan.full:
            at_s += rng.expovariate(peak)
            if at_s >= plan.duration_s:
                break
            night = night_at(at_s)
            draw = rng.random() * peak
            for event_type in types:
                draw -= scenario.rate_per_s(kind, event_type, night=night) * len(members)
                if draw < 0:
                    plan.add(at_s, "event", rng.choice(members), type=event_type)
                    break


def _plan_drops(plan: _Planner, scenario: Scenario, devices: int, rng: random.Random) -> None:
    """Random drops off the network, each with its return."""
    if scenario.offline.rate_per_s <= 0 or not devices:
        return
    rate = scenario.offline.rate_per_s * devices
    at_s = 0.0
    while not plan.full:
        at_s += rng.expovariate(rate)
        if at_s >= plan.duration_s:
            break
        victim = rng.randrange(devices)
        plan.add(at_s, "drop", victim)
        plan.add(at_s + rng.uniform(scenario.offline.min_s, scenario.offline.max_s), "back", victim)


def _plan_burst(
    plan: _Planner,
    scenario: Scenario,
    specs: Sequence[DeviceSpec],
    by_kind: dict[str, list[int]],
    rng: random.Random,
) -> None:
    burst = scenario.burst
    if burst is None or not burst.total or not specs:
        return
    types = sorted(burst.types)
    weights = [burst.types[t] for t in types]
    senders = {t: [i for k in EMITTERS.get(t, ()) for i in by_kind.get(k.value, [])] for t in types}
    for _ in range(burst.total):
        event_type = rng.choices(types, weights)[0]
        pool = senders[event_type]
        device = rng.choice(pool) if pool else rng.randrange(len(specs))
        plan.add(burst.start_s + rng.random() * burst.duration_s, "event", device, type=event_type)


def _plan_power_cut(
    plan: _Planner, scenario: Scenario, specs: Sequence[DeviceSpec], rng: random.Random
) -> None:
    cut = scenario.power_cut
    if cut is None or not specs:
        return
    kinds = set(cut.kinds) if cut.kinds is not None else None
    pool = [i for i, sp in enumerate(specs) if kinds is None or sp.kind in kinds]
    victims = pool if len(pool) <= cut.devices else rng.sample(pool, cut.devices)
    for v in victims:
        plan.add(cut.at_s, "drop", v)
    for v in victims:
        plan.add(cut.at_s + cut.duration_s, "back", v)


def _plan_stories(
    plan: _Planner, scenario: Scenario, specs: Sequence[DeviceSpec], by_kind: dict[str, list[int]]
) -> None:
    """One-device stories: scripted events, a flapping device, a device resending forever."""

    def pick(kind: str | None, index: int) -> int | None:
        found = sorted(
            (i for i, sp in enumerate(specs) if kind is None or sp.kind == kind),
            key=lambda i: specs[i].device_id,
        )
        return found[index % len(found)] if found else None

    for scripted in scenario.scripted:
        kinds_ = [scripted.kind] if scripted.kind else [k.value for k in EMITTERS.get(scripted.type, ())]
        candidates = sorted((i for k in kinds_ for i in by_kind.get(k, [])), key=lambda i: specs[i].device_id)
        if candidates:
            plan.add(
                scripted.at_s,
                "event",
                candidates[scripted.device_index % len(candidates)],
                type=scripted.type,
            )
    for flap in scenario.flapping:
        flapper = pick(flap.kind, flap.device_index)
        if flapper is not None:
            for n in range(flap.max_drops):
                at_s = flap.start_s + n * flap.period_s
                if at_s >= plan.duration_s:
                    break
                plan.add(at_s, "drop", flapper)
                plan.add(at_s + flap.down_s, "back", flapper)
    for item in scenario.resend_forever:
        resender = pick(item.kind, item.device_index)
        if resender is not None:
            plan.add(
                item.at_s,
                "forever",
                resender,
                type=item.type,
                interval_s=item.interval_s or scenario.resend.initial_s,
                max_sends=item.max_sends,
            )


class LoadReport(BaseModel):
    """The load-mode part of a run: one privileged identity speaking for many devices."""

    model_config = ConfigDict(frozen=True)

    identity: str | None
    devices: int
    real_s: float
    telemetry_sent: int
    events_sent: int
    events_acked: int
    events_rejected: int
    events_pending: int
    resends: int
    status_sent: int
    status_cleared: int  # retained statuses deleted at the end (empty retained message)
    acks_seen: int
    acks_observed: bool | None  # False: the broker refused the ack subscription
    ack_latency: LatencySummary
    offline_max: int  # devices offline at once, at most (power cut, drops, flapping)
    publish_errors: int
    stopped_by: str


class LoadRun:
    """Plays a scenario's share for many devices over one ``LoadGenerator``, in a thread.

    Heartbeats go round-robin per heartbeat interval, so every device is heard once per
    interval as the registry expects; the planned actions (``plan_load``) run at their
    simulated moments. An offline device sends nothing; events it raises meanwhile are
    held and sent when it is back, like a device's."""

    def __init__(
        self,
        gen: LoadGenerator,
        specs: Sequence[DeviceSpec],
        scenario: Scenario,
        *,
        speed: float,
        duration_s: float,
        max_messages: int,
        seed: int = 1,
        drain_s: float = 10.0,
        run_id: str | None = None,
    ) -> None:
        self.gen = gen
        self.specs = list(specs)
        self.scenario = scenario
        self.speed = speed
        self.duration_s = duration_s
        self.max_messages = max_messages
        self.drain_s = drain_s
        self.run_id = run_id or secrets.token_hex(4)
        self.start = datetime.now(UTC)
        self._rng = random.Random(f"{seed}:load-data")
        self.plan = plan_load(
            scenario, self.specs, duration_s, seed=seed, start=self.start, max_actions=max_messages
        )
        self.offline: set[str] = set()
        self.offline_max = 0
        self.status_touched: set[str] = set()  # retained status published: cleared at the end
        self.stop = threading.Event()
        self.stopped_by = "not started"
        self.status_cleared = 0
        self.real_s = 0.0
        self._n = 0
        groups: dict[float, list[str]] = {}
        for sp in self.specs:
            groups.setdefault(scenario.heartbeat_for(sp.kind, sp.heartbeat_s), []).append(sp.device_id)
        self._groups = sorted(groups.items())
        self._forever: list[tuple[SentEvent, float, int]] = []  # event, interval, max copies

    @property
    def messages(self) -> int:
        st = self.gen.stats
        return st.telemetry_sent + st.events_sent + st.resends + st.status_sent

    def _event(self, device: str, event_type: str, at_s: float) -> SentEvent:
        self._n += 1
        moment = (self.start + timedelta(seconds=at_s)).astimezone(ZoneInfo(self.scenario.timezone))
        night = self.scenario.day_night_rhythm and self.scenario.night.contains(moment.hour)
        data = _event_data(
            event_type, self._rng, night=night, not_returned=self.scenario.bed_exit_not_returned
        )
        return self.gen.event(
            device,
            f"{self.run_id}-{self._n:07d}",
            event_type,
            sensor=None,
            data=data,
            send=device not in self.offline,
        )

    def _do(self, act: _Act) -> None:
        device = self.specs[act.device].device_id
        if act.what == "event":
            self._event(device, act.type, act.at_s)
        elif act.what == "drop":
            if device not in self.offline:
                self.offline.add(device)
                self.offline_max = max(self.offline_max, len(self.offline))
                self.status_touched.add(device)
                self.gen.status(device, "offline")  # what the broker sends as the will
        elif act.what == "back":
            if device in self.offline:
                self.offline.discard(device)
                self.gen.status(device, "online")
                self.gen.resend_now(device)
        elif act.what == "forever":
            ev = self._event(device, act.type, act.at_s)
            self._forever.append((ev, act.interval_s, act.max_sends))

    def run(self) -> None:
        """Until the simulated duration passes, ``stop`` is set or the message budget is
        spent; then up to ``drain_s`` real seconds for outstanding acks (with resends)."""
        gen = self.gen
        qos = self.scenario.telemetry.qos
        t0 = time.monotonic()
        real_end = t0 + self.duration_s / self.speed
        sent = [0] * len(self._groups)
        next_act = 0
        last_resend = t0
        self.stopped_by = "duration"
        hold = self.offline.__contains__
        try:
            # A device that will drop announces itself first, as it did when it connected:
            # the platform only takes a will (an ``offline`` status) from a device it knows
            # online. Only these few: 95,000 retained statuses would be a broker's worth of
            # litter.
            for index in sorted({a.device for a in self.plan if a.what == "drop"}):
                device = self.specs[index].device_id
                self.status_touched.add(device)
                gen.status(device, "online")
            while True:
                now = time.monotonic()
                if now >= real_end:
                    break
                if self.stop.is_set():
                    self.stopped_by = "stopped"
                    break
                if self.messages >= self.max_messages:
                    self.stopped_by = "max_messages"
                    break
                sim_s = (now - t0) * self.speed
                while next_act < len(self.plan) and self.plan[next_act].at_s <= sim_s:
                    self._do(self.plan[next_act])
                    next_act += 1
                self._heartbeats(sent, sim_s, qos)
                self._copy_forever(now)
                if now - last_resend >= 0.1:
                    gen.resend_due(now, hold=hold)
                    last_resend = now
                time.sleep(0.005)
            self.real_s = time.monotonic() - t0
            self._drain(hold)
        finally:
            # The retained statuses would otherwise stay on the broker for good, and every
            # gateway subscribing later (on a shared broker: someone else's) would be
            # replayed them; also when the run ends early on an error.
            self.status_cleared = gen.clear_statuses(sorted(self.status_touched))

    def _heartbeats(self, sent: list[int], sim_s: float, qos: int) -> None:
        """Telemetry due by ``sim_s``, round-robin per heartbeat group, within the budget."""
        budget = self.max_messages - self.messages
        for g, (heartbeat, members) in enumerate(self._groups):
            due = int(sim_s * len(members) / heartbeat) - sent[g]
            for _ in range(max(0, min(due, budget))):
                device = members[sent[g] % len(members)]
                sent[g] += 1
                if device not in self.offline:
                    self.gen.telemetry(device, qos=qos, pad_to=0)
                    budget -= 1

    def _copy_forever(self, now: float) -> None:
        """The next copy of each event a misbehaving device resends whatever it hears."""
        for ev, interval, max_sends in self._forever:
            if ev.sends < max_sends and ev.device_id not in self.offline:
                if now - ev.last_sent >= interval / self.speed:
                    self.gen.copy(ev)

    def _drain(self, hold: Callable[[str], bool]) -> None:
        """Up to ``drain_s`` real seconds for outstanding acks of devices online, with resends."""
        deadline = time.monotonic() + self.drain_s
        while time.monotonic() < deadline and not self.stop.is_set():
            if not [k for k in self._unsettled() if k[0] not in self.offline]:
                break
            self.gen.resend_due(hold=hold)
            time.sleep(0.05)

    def _unsettled(self) -> list[tuple[str, str]]:
        return [k for k, ev in list(self.gen.events.items()) if ev.acked is None and ev.rejected is None]

    def report(self) -> LoadReport:
        evs = list(self.gen.events.values())
        acked = sum(1 for e in evs if e.acked is not None)
        rejected = sum(1 for e in evs if e.acked is None and e.rejected is not None)
        st = self.gen.stats
        return LoadReport(
            identity=self.gen.username,
            devices=len(self.specs),
            real_s=round(self.real_s, 2),
            telemetry_sent=st.telemetry_sent,
            events_sent=st.events_sent,
            events_acked=acked,
            events_rejected=rejected,
            events_pending=len(evs) - acked - rejected,
            resends=st.resends,
            status_sent=st.status_sent,
            status_cleared=self.status_cleared,
            acks_seen=st.acks_seen,
            acks_observed=self.gen.acks_observed,
            ack_latency=_summary(self.gen.ack_latencies_ms()),
            offline_max=self.offline_max,
            publish_errors=st.publish_errors,
            stopped_by=self.stopped_by,
        )


def _summary(values_ms: Sequence[float]) -> LatencySummary:
    d = latency_summary(values_ms)
    return LatencySummary(
        count=int(d["count"] or 0),
        p50_ms=d["p50"],
        p90_ms=d["p90"],
        p99_ms=d["p99"],
        max_ms=d["max"],
    )
