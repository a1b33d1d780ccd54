"""A lean MQTT 3.1.1 publisher for the bench's readings: bytes on a socket, no client library.

``carecall bench`` sends thousands of readings a second behind the alarms it measures, on
the same two cores as the platform (carecall/shell/bench_readings.py). Through paho that
sender used 39 % of a core at 5,000 readings/s on an idle machine (27 % at QoS 0, 34 %
with 10 ms ticks; 2026-12-07), and during the bench's quiet phase 32–48 %: more than any
platform process but the dispatcher, on cores the platform was queueing for. Real devices
are other machines; their CPU is not the server's. This sender writes what paho writes on
the wire — a CONNECT, then QoS 1 PUBLISH packets, each answered by a PUBACK that it counts
— but builds each tick's packets into one buffer and sends it with one system call, and
parses nothing but PUBACKs. The payloads are the loadgen's own
(:func:`simulators.loadgen.telemetry_payload`). It is for load only: no resend, no
session, no TLS; a refused or broken connection raises.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Sequence

from simulators.loadgen import ROOT, telemetry_payload
from simulators.runner import check_host

__all__ = ["ReadingsPublisher", "run_paced"]

_CONNECT, _CONNACK, _PUBLISH_QOS1, _PUBACK, _DISCONNECT = 0x10, 0x20, 0x32, 0x40, 0xE0


def _varint(n: int) -> bytes:
    """MQTT's remaining length: 7 bits a byte, low first, the high bit for "more"."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("!H", len(raw)) + raw


def connect_packet(client_id: str, username: str | None, password: str | None, keepalive_s: int) -> bytes:
    flags = 0x02  # clean session
    payload = _string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _string(username)
        if password is not None:
            flags |= 0x40
            payload += _string(password)
    body = _string("MQTT") + bytes([4, flags]) + struct.pack("!H", keepalive_s) + payload
    return bytes([_CONNECT]) + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, packet_id: int) -> bytes:
    """PUBLISH at QoS 1, not retained, not a duplicate."""
    body_len = 2 + len(topic) + 2 + len(payload)
    return b"".join(
        (bytes([_PUBLISH_QOS1]), _varint(body_len), struct.pack("!H", len(topic)), topic,
         struct.pack("!H", packet_id), payload)
    )  # fmt: skip


class ReadingsPublisher:
    """One connection publishing QoS 1 messages; :meth:`publish` queues, :meth:`flush`
    sends the queue in one write and counts the PUBACKs that arrived meanwhile."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        client_id: str,
        username: str | None = None,
        password: str | None = None,
        max_inflight: int = 1000,
        keepalive_s: int = 60,
        allow_remote: bool = False,
    ) -> None:
        check_host(host, allow_remote=allow_remote)
        self._addr = (host, port)
        self._connect = connect_packet(client_id, username, password, keepalive_s)
        self.max_inflight = max_inflight
        self.sent = 0
        self.acked = 0
        self._next_id = 1
        self._queue: list[bytes] = []
        self._rx = bytearray()
        self._sock: socket.socket | None = None

    @property
    def inflight(self) -> int:
        """Published and not yet acknowledged (queued ones included)."""
        return self.sent + len(self._queue) - self.acked

    def connect(self, timeout_s: float = 10.0) -> None:
        sock = socket.create_connection(self._addr, timeout=timeout_s)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(self._connect)
        deadline = time.monotonic() + timeout_s
        head = b""
        while len(head) < 4:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(4 - len(head))
            if not chunk:
                sock.close()
                raise ConnectionError("the broker closed the connection before its CONNACK")
            head += chunk
        if head[0] != _CONNACK or head[3] != 0:
            sock.close()
            raise ConnectionError(f"the broker refused the connection (CONNACK {head.hex()})")
        sock.setblocking(False)
        self._sock = sock

    def publish(self, topic: str, payload: bytes) -> None:
        self._queue.append(publish_packet(topic.encode(), payload, self._next_id))
        self._next_id = self._next_id % 65535 + 1  # 1..65535: 0 is not a packet id

    def flush(self) -> None:
        """Send what is queued (one write; the rest of it waits for the next flush if the
        socket's buffer is full) and count the PUBACKs read meanwhile."""
        sock = self._sock
        if sock is None:
            raise RuntimeError("ReadingsPublisher.connect() first")
        self._read_acks(sock)
        if not self._queue:
            return
        data = b"".join(self._queue)
        try:
            n = sock.send(data)
        except BlockingIOError:
            n = 0
        if n == len(data):
            self.sent += len(self._queue)
            self._queue.clear()
            return
        # count whole packets out; the first one cut is sent with the rest next time
        done = 0
        while self._queue and done + len(self._queue[0]) <= n:
            done += len(self._queue.pop(0))
            self.sent += 1
        if n > done:
            self._queue[0] = self._queue[0][n - done :]

    def _read_acks(self, sock: socket.socket) -> None:
        while True:
            try:
                chunk = sock.recv(65536)
            except BlockingIOError:
                break
            if not chunk:
                raise ConnectionError("the broker closed the connection")
            self._rx += chunk
        rx = self._rx
        i = 0
        while len(rx) - i >= 2:
            kind = rx[i] & 0xF0
            length, shift, j = 0, 0, i + 1
            while j < len(rx):
                length |= (rx[j] & 0x7F) << shift
                shift += 7
                j += 1
                if not rx[j - 1] & 0x80:
                    break
            else:
                break  # the length itself is not all here yet
            if len(rx) < j + length:
                break
            if kind == _PUBACK:
                self.acked += 1
            i = j + length
        del rx[:i]

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            sock.setblocking(True)
            sock.settimeout(1.0)
            if self._queue:
                sock.sendall(b"".join(self._queue))
                self.sent += len(self._queue)
                self._queue.clear()
            sock.sendall(bytes([_DISCONNECT, 0]))
        except OSError:
            pass
        finally:
            sock.close()


def run_paced(
    pub: ReadingsPublisher,
    *,
    devices: Sequence[str],
    per_s: float,
    duration_s: float,
    tick_s: float = 0.002,
    pad_to: int = 200,
) -> int:
    """``per_s`` readings a second for ``duration_s``, round-robin over ``devices``, the
    loadgen's payloads; paced by schedule (a late tick sends what is due by then), never
    more than ``max_inflight`` unacknowledged. Returns the readings sent: all
    ``duration_s * per_s`` of them unless the broker falls that far behind for a second
    past the end."""
    if not devices:
        raise ValueError("no devices to publish for")
    topics = [f"{ROOT}/{d}/telemetry" for d in devices]
    t0 = time.monotonic()
    end = t0 + duration_s
    total = int(duration_s * per_s)
    queued = 0
    while True:
        now = time.monotonic()
        due = total - queued if now >= end else int((now - t0) * per_s) - queued
        ts_ms = int(time.time() * 1000)
        for _ in range(max(0, min(due, pub.max_inflight - pub.inflight))):
            queued += 1
            pub.publish(topics[queued % len(topics)], telemetry_payload(queued, ts_ms, pad_to))
        pub.flush()
        if now >= end and (queued >= total or now >= end + 1.0):
            return pub.sent  # all of them, or what the broker let out within a second more
        time.sleep(tick_s)
