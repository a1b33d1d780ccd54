"""The embedded MQTT broker of the one-process demo (amqtt 0.12.1, pinned).

Production runs Mosquitto with files from ``broker_config``; this broker exists so that
``carecall`` runs with nothing else installed. It must still hold the device contract of
docs/protocol.md "Who is on the line": a device logs in as itself, may publish only under its own
topic root and may read only its own downlink, so demo data can never cross homes.

amqtt is extended, not forked. Credentials and topic rules live in ``AccessPolicy`` (plain
code, testable without a socket) and reach amqtt through one auth and one topic plugin.
A subclass of amqtt's ``Broker`` fixes what amqtt 0.12.1 gets wrong for this contract:

* it checks credentials *before* touching sessions: stock amqtt deletes a clean session,
  or takes over a live connection, for whoever presents a client id, even when that
  connection is then refused;
* it re-sends retained messages on reconnect only for the session's own subscriptions
  (stock amqtt sends every retained message matching *any* client's subscription, which
  would leak other homes' ``config`` and ``status`` to a device);
* it delivers messages queued for an offline session with retain=0, as MQTT requires
  (stock amqtt flags them retained, so a gateway would mistake fresh events for history);
* it broadcasts over a snapshot of the subscription table (stock amqtt loses a message
  when a client subscribes while it is being delivered);
* it delivers alarms before readings, takes a client's messages in batches, with no
  task per topic check (device_gateway/broker_queue.py): stock amqtt stalled a storm;
* amqtt has no shared subscriptions: a ``$share/{group}/{filter}`` filter is kept
  literally and never matches a publish. The subclass matches it as ``{filter}``, so a
  single gateway can use the same subscription on both brokers. Every member of a group
  gets every message (no load split); the embedded broker serves one process anyway.

A registry change announced on the bus (channel ``devices``: a device disabled, re-keyed or
removed) takes effect at once: ``EmbeddedBroker.follow`` drops the device's cached logins
and closes each live connection whose credentials the registry no longer accepts.

amqtt speaks MQTT 3.1.1 only (a 5.0 CONNECT is refused), keeps everything in memory and
delivers QoS 1 at the subscriber's granted QoS.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self

from amqtt.broker import Broker
from amqtt.contexts import Action
from amqtt.errors import AMQTTError, MQTTError
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import Session
from amqtt.utils import gen_client_id
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from device_gateway.broker_queue import DELIVERY_BATCH, AlarmsFirstQueue
from device_gateway.changes import DEVICES_CHANNEL, announced_ids
from device_gateway.credentials import verify_secret
from device_gateway.models import Device
from device_gateway.protocol import DEVICE_ID_RE, DOWNLINK, UPLINK, parse_topic

if TYPE_CHECKING:
    from carecall.core.bus import MemoryBus, RedisBus

log = logging.getLogger(__name__)

AUTH_CACHE_TTL_S: Final = 60.0
# Past this many cached logins expired entries are swept; a reconnect storm of a whole
# fleet stays well below it, so the sweep runs rarely.
_AUTH_CACHE_SWEEP_AT: Final = 50_000
# A device gone for a day has no use for the acks and configs queued meanwhile; without
# a limit amqtt would keep them (in memory) forever.
SESSION_EXPIRY_S: Final = 24 * 3600
_PRINCIPAL_KEY: Final = "carecall.principal"
_SHARE_PREFIX: Final = "$share/"
_PLATFORM_ROOT: Final = "carecall/"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a connection authenticated as; topic rules depend on nothing else."""

    username: str
    platform: bool = False
    privileged: bool = False


# --------------------------------------------------------------------------- topic rules


def _split_share(topic_filter: str) -> str | None:
    """``$share/{group}/{filter}`` → ``{filter}``; None when the share syntax is broken."""
    parts = topic_filter.split("/", 2)
    if len(parts) != 3 or not parts[1] or any(c in parts[1] for c in "+#") or not parts[2]:
        return None
    return parts[2]


def may_publish(principal: Principal, topic: str) -> bool:
    """Publish rule; mirrors the dynsec roles written by ``broker_config``."""
    if principal.platform:
        return topic.startswith(_PLATFORM_ROOT)
    parsed = parse_topic(topic)
    if parsed is None or parsed.channel not in UPLINK:
        return False
    # A privileged device is a load generator speaking for many simulated devices.
    return principal.privileged or parsed.device_id == principal.username


def may_subscribe(principal: Principal, topic_filter: str) -> bool:
    """Subscribe rule. Devices get exact topics only: a wildcard would let one device read
    a filter the rule set cannot reason about, and devices never need one."""
    if principal.platform:
        if topic_filter.startswith(_SHARE_PREFIX):
            inner = _split_share(topic_filter)
            return inner is not None and inner.startswith(_PLATFORM_ROOT)
        return topic_filter.startswith(_PLATFORM_ROOT)
    return may_receive(principal, topic_filter)


def may_receive(principal: Principal, topic: str) -> bool:
    """Delivery rule, checked again per message so no path around the subscribe check
    (retained copies, queued messages) can hand a device someone else's downlink."""
    if principal.platform:
        return topic.startswith(_PLATFORM_ROOT)
    parsed = parse_topic(topic)
    return parsed is not None and parsed.channel in DOWNLINK and parsed.device_id == principal.username


# --------------------------------------------------------------------------- credentials


class AccessPolicy:
    """Checks logins against the device registry and answers topic questions.

    Successful device logins are cached for ``cache_ttl_s`` keyed by (username, SHA-256 of
    the password), so a fleet reconnecting after a broker restart costs one query and one
    PBKDF2 per device, not per attempt. A registry change announced on the bus (``forget``,
    see ``EmbeddedBroker.follow``) drops the device's entries at once; without it a device
    disabled meanwhile could log in again until its entry expired. Failures are never
    cached, so a fixed secret works at once.
    """

    def __init__(
        self,
        maker: async_sessionmaker[AsyncSession],
        *,
        platform_username: str,
        platform_password: str,
        cache_ttl_s: float = AUTH_CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not platform_username or not platform_password:
            raise ValueError("the platform account needs a username and a password")
        self._maker = maker
        self._platform_username = platform_username
        self._platform_password = platform_password.encode("utf-8")
        self._ttl = cache_ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, bytes], tuple[float, Principal]] = {}
        self.db_lookups = 0

    async def authenticate(
        self, *, client_id: str | None, username: str | None, password: str | None
    ) -> Principal | None:
        """The principal for these credentials, or None to refuse the connection."""
        if not username or not password:
            return None
        if username == self._platform_username:
            if hmac.compare_digest(password.encode("utf-8"), self._platform_password):
                return Principal(username, platform=True)
            return None
        # Client id = username keeps one device from taking over another's session.
        if client_id != username or not DEVICE_ID_RE.match(username):
            return None
        key = (username, hashlib.sha256(password.encode("utf-8")).digest())
        now = self._clock()
        hit = self._cache.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        principal = await self._check_device(username, password)
        if principal is not None:
            if len(self._cache) >= _AUTH_CACHE_SWEEP_AT:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            self._cache[key] = (now + self._ttl, principal)
        return principal

    def forget(self, usernames: Iterable[str]) -> None:
        """Drop cached logins of these devices: their next login asks the registry."""
        gone = set(usernames)
        if gone:
            self._cache = {k: v for k, v in self._cache.items() if k[0] not in gone}

    async def still_valid(self, username: str, password: str | None) -> bool:
        """Whether a live device connection's credentials are still accepted (no cache)."""
        return bool(password) and await self._check_device(username, password or "") is not None

    async def _check_device(self, device_id: str, password: str) -> Principal | None:
        self.db_lookups += 1
        async with self._maker() as session:
            row = (
                await session.execute(
                    select(Device.enabled, Device.secret_hash, Device.privileged).where(
                        Device.id == device_id
                    )
                )
            ).one_or_none()
        if row is None or not row.enabled or not row.secret_hash:
            return None
        # PBKDF2 off the event loop: the broker keeps serving while a storm logs in.
        if not await asyncio.to_thread(verify_secret, password, row.secret_hash):
            return None
        return Principal(device_id, privileged=bool(row.privileged))

    def allows(self, principal: Principal, topic: str, action: Action) -> bool:
        if action == Action.PUBLISH:
            return may_publish(principal, topic)
        if action == Action.SUBSCRIBE:
            return may_subscribe(principal, topic)
        return may_receive(principal, topic)


# --------------------------------------------------------------------------- amqtt glue

@dataclass
class _PluginConfig:
    """amqtt builds each plugin's config from a dict; this carries the shared policy."""

    policy: Any = None


def _policy_of(plugin: BaseAuthPlugin | BaseTopicPlugin) -> AccessPolicy:
    config = plugin.context.config
    policy = getattr(config, "policy", None)
    if not isinstance(policy, AccessPolicy):
        raise RuntimeError("CareCall broker plugin loaded without its AccessPolicy")
    return policy


class _AuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Connects amqtt's login hook to ``AccessPolicy`` and pins the principal on the session."""

    Config = _PluginConfig

    async def authenticate(self, *, session: Session) -> bool | None:
        principal = await _policy_of(self).authenticate(
            client_id=session.client_id, username=session.username, password=session.password
        )
        if principal is not None and session.will_flag:
            # amqtt publishes a will without any topic check; refuse the login instead, so a
            # device cannot leave an "offline" status in another device's name.
            will_topic = session.will_topic or ""
            if not may_publish(principal, will_topic):
                log.debug("refused %s: will topic %r not allowed", session.client_id, will_topic)
                principal = None
        if principal is None:
            session.attributes.pop(_PRINCIPAL_KEY, None)
            log.debug("refused login of client %r user %r", session.client_id, session.username)
            return False
        session.attributes[_PRINCIPAL_KEY] = principal
        return True


class _TopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type hints
    """Connects amqtt's topic hook to ``AccessPolicy``; denied publishes are dropped by amqtt."""

    Config = _PluginConfig

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool | None:
        principal = session.attributes.get(_PRINCIPAL_KEY) if session is not None else None
        if not isinstance(principal, Principal) or topic is None or action is None:
            return False
        allowed = _policy_of(self).allows(principal, topic, action)
        if not allowed:
            log.debug("denied %s of %r to %s", action.value, topic, principal.username)
        return allowed


class _CareCallBroker(Broker):  # type: ignore[misc]  # amqtt ships no type hints
    """amqtt 0.12.1's broker with the fixes listed in the module docstring. The overrides
    touch private methods of that exact version, which is why the dependency is pinned."""

    _DRAIN_S: Final = 2.0

    def __init__(self, config: dict[str, Any], policy: AccessPolicy | None = None) -> None:
        super().__init__(config)
        self._connections: set[asyncio.Task[Any]] = set()
        self._closing = False
        self._policy = policy
        self._broadcast_queue = AlarmsFirstQueue()

    async def _handle_message_delivery(
        self, client_session: Session, handler: BrokerProtocolHandler, wait_deliver: asyncio.Future[Any]
    ) -> bool:
        """amqtt's, then the same for what else the client sent meanwhile, up to a batch:
        its connection loop waits on four futures per message (two loop turns each)."""
        if not await super()._handle_message_delivery(client_session, handler, wait_deliver):
            return False
        queue = client_session.delivered_message_queue
        for _ in range(DELIVERY_BATCH):
            if queue.empty():
                break
            taken: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            taken.set_result(queue.get_nowait())
            if not await super()._handle_message_delivery(client_session, handler, taken):
                return False
        return True

    async def _topic_filtering(self, session: Session, topic: str, action: Action) -> bool:
        """The policy asked directly (the broker's only topic rule, ``start``): amqtt's
        plugin manager runs each check as a task and gathers it, two loop turns for every
        incoming message and every subscriber of every broadcast."""
        if self._policy is None:
            return bool(await super()._topic_filtering(session, topic, action))
        principal = session.attributes.get(_PRINCIPAL_KEY) if session is not None else None
        if not isinstance(principal, Principal) or topic is None or action is None:
            return False
        return self._policy.allows(principal, topic, action)

    async def stream_connected(self, reader: Any, writer: Any, listener_name: str) -> None:
        """Track each connection's task so ``close`` can end them. asyncio (3.11) logs a
        cancelled connection task as an error, so a cancel from ``close`` ends it quietly."""
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
        try:
            await super().stream_connected(reader, writer, listener_name)
        except asyncio.CancelledError:
            if not self._closing:
                raise
        finally:
            if task is not None:
                self._connections.discard(task)

    def device_sessions(self, usernames: set[str]) -> list[tuple[Session, BrokerProtocolHandler]]:
        """Connected sessions of these devices (platform connections never)."""
        found = []
        for session, handler in list(self._sessions.values()):
            principal = session.attributes.get(_PRINCIPAL_KEY)
            if (
                isinstance(principal, Principal)
                and not principal.platform
                and principal.username in usernames
                and session.transitions.state == "connected"
                and handler is not None
            ):
                found.append((session, handler))
        return found

    async def close(self) -> None:
        """amqtt's shutdown closes the sockets but can leave connection tasks behind,
        still holding sessions; give them a moment to finish, then cancel the rest."""
        self._closing = True
        await self.shutdown()
        if self._connections:
            _done, pending = await asyncio.wait(set(self._connections), timeout=self._DRAIN_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=self._DRAIN_S)

    async def _initialize_client_session(
        self, reader: Any, writer: Any, remote_address: str, remote_port: int
    ) -> tuple[BrokerProtocolHandler, Session]:
        try:
            handler, incoming = await BrokerProtocolHandler.init_from_connect(
                reader, writer, self.plugins_manager
            )
        except MQTTError:
            await writer.close()
            raise
        if not await self._authenticate(incoming, self.listeners_config["default"]):
            handler.attach(incoming, reader, writer)
            await handler.mqtt_connack_authorize(False)
            await writer.close()
            raise AMQTTError(f"login refused for client {incoming.client_id!r}")

        # From here on as amqtt 0.12.1 does it, now only for an authenticated client.
        client_session: Session = incoming
        if client_session.clean_session:
            if client_session.client_id:
                await self._delete_session(client_session.client_id)
            else:
                client_session.client_id = gen_client_id()
            client_session.parent = 0
        elif client_session.client_id in self._sessions:
            existing: Session = self._sessions[client_session.client_id][0]
            existing.will_flag = incoming.will_flag
            existing.will_message = incoming.will_message
            existing.will_topic = incoming.will_topic
            existing.will_qos = incoming.will_qos
            existing.will_retain = incoming.will_retain
            existing.keep_alive = incoming.keep_alive
            existing.username = incoming.username
            existing.password = incoming.password
            client_session = existing
            client_session.parent = 1
        else:
            client_session.parent = 0
        delay = self.config.get("timeout-disconnect-delay", 0)
        if client_session.keep_alive > 0 and isinstance(delay, int):
            client_session.keep_alive += delay
        return handler, client_session

    async def _publish_session_retained_messages(self, session: Session) -> None:
        handler = self._get_handler(session)
        if handler is None:
            return
        tasks = []
        while not session.retained_messages.empty():
            queued = session.retained_messages.get_nowait()
            tasks.append(
                asyncio.ensure_future(
                    handler.mqtt_publish(queued.topic, queued.data, queued.qos, retain=False)
                )
            )
        if tasks:
            await asyncio.wait(tasks)

    async def _publish_retained_messages_for_subscription(
        self, subscription: tuple[str, int], session: Session
    ) -> None:
        topic_filter = subscription[0]
        if topic_filter.startswith(_SHARE_PREFIX):
            return  # MQTT 5: no retained messages for shared subscriptions (as Mosquitto)
        holders = self._subscriptions.get(topic_filter, [])
        if not any(held.client_id == session.client_id for held, _qos in holders):
            return
        await super()._publish_retained_messages_for_subscription(subscription, session)

    async def _run_broadcast(self, running_tasks: Any) -> None:
        """Stock amqtt iterates the live subscription table across awaits; a client that
        subscribes meanwhile raises "dictionary changed size during iteration" and the
        message is lost for every subscriber. Iterate over a snapshot instead."""
        broadcast = await self._broadcast_queue.get()
        topic = broadcast["topic"]
        for k_filter, subscriptions in list(self._subscriptions.items()):
            if not self._matches(topic, k_filter):
                continue
            for target_session, sub_qos in list(subscriptions):
                qos = broadcast.get("qos", sub_qos)
                if not await self._topic_filtering(target_session, topic=topic, action=Action.RECEIVE):
                    continue
                connected = target_session.transitions.state == "connected"
                if not connected:
                    if not target_session.clean_session and qos in (1, 2) and not target_session.is_anonymous:
                        await self._retain_broadcast_message(broadcast, qos, target_session)
                    continue
                handler = self._get_handler(target_session)
                if handler:
                    running_tasks.append(
                        asyncio.ensure_future(
                            handler.mqtt_publish(topic, broadcast["data"], qos, retain=False)
                        )
                    )

    def _matches(self, topic: str, a_filter: str) -> bool:
        if a_filter.startswith(_SHARE_PREFIX):
            inner = _split_share(a_filter)
            if inner is None:
                return False
            a_filter = inner
        return bool(super()._matches(topic, a_filter))


def _quiet(logger_name: str, debug: bool) -> None:
    """amqtt and its state machine log every packet at INFO; keep them at WARNING unless
    this module is debugged, and never override a level someone configured on purpose."""
    logger = logging.getLogger(logger_name)
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG if debug else logging.WARNING)


class EmbeddedBroker:
    """The demo's MQTT broker: one TCP listener, device logins against the registry,
    per-device topic rules, no $SYS topics and no websocket listener.

    ``port=0`` binds a free port; ``port`` then reports the one chosen.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        maker: async_sessionmaker[AsyncSession],
        platform_username: str,
        platform_password: str,
    ) -> None:
        self.host = host
        self._requested_port = port
        self.policy = AccessPolicy(
            maker, platform_username=platform_username, platform_password=platform_password
        )
        self._broker: _CareCallBroker | None = None

    @property
    def port(self) -> int:
        if self._broker is None:
            return self._requested_port
        server = self._broker._servers.get("default")
        sockets = getattr(getattr(server, "instance", None), "sockets", None) or ()
        for sock in sockets:
            return int(sock.getsockname()[1])
        return self._requested_port

    @property
    def running(self) -> bool:
        return self._broker is not None

    async def start(self) -> None:
        if self._broker is not None:
            raise RuntimeError("embedded broker already started")
        debug = log.isEnabledFor(logging.DEBUG)
        _quiet("amqtt", debug)
        _quiet("transitions", debug)
        plugin_config = {"policy": self.policy}
        host = f"[{self.host}]" if ":" in self.host else self.host
        config: dict[str, Any] = {
            "listeners": {
                "default": {"type": "tcp", "bind": f"{host}:{self._requested_port}"},
            },
            "session_expiry_interval": SESSION_EXPIRY_S,
            # Only our two plugins: no anonymous login, no $SYS publisher, no packet logger.
            "plugins": {
                f"{__name__}._AuthPlugin": plugin_config,
                f"{__name__}._TopicPlugin": plugin_config,
            },
        }
        broker = _CareCallBroker(config, self.policy)
        await broker.start()
        self._broker = broker
        log.info("embedded MQTT broker listening on %s:%d", self.host, self.port)

    async def follow(self, bus: MemoryBus | RedisBus) -> None:
        """Apply registry changes announced on the ``devices`` bus channel until cancelled:
        a disabled, re-keyed or removed device is refused from then on and its live
        connection is closed (as amqtt does on a takeover: the will fires)."""
        async for message in bus.subscribe(DEVICES_CHANNEL):
            ids = announced_ids(message)
            if not ids:
                continue
            try:
                kicked = await self.revoke(ids)
            except Exception:  # a bad row or a database hiccup must not end the watch
                log.exception("embedded broker: applying a registry change failed")
                continue
            if kicked:
                log.info("embedded broker: disconnected %d device(s) no longer accepted", len(kicked))

    async def revoke(self, device_ids: Sequence[str]) -> list[str]:
        """Forget these devices' cached logins and close each live connection whose
        credentials the registry no longer accepts; the client ids closed."""
        self.policy.forget(device_ids)
        broker = self._broker
        if broker is None:
            return []
        kicked: list[str] = []
        for session, handler in broker.device_sessions(set(device_ids)):
            if await self.policy.still_valid(session.username, session.password):
                continue
            await handler.handle_connection_closed()
            kicked.append(session.client_id)
        return kicked

    async def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.close()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
