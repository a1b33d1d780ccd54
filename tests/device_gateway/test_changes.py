"""The bus contract for device changes (device_gateway/changes.py): what a consumer takes
from a ``devices`` message, and what the registry publishes."""

from __future__ import annotations

import pytest

from device_gateway.changes import ANNOUNCE_CHUNK, DEVICES_CHANNEL, announce_devices, announced_ids


@pytest.mark.parametrize(
    ("message", "ids"),
    [
        ({"ids": ["a", "b", "a"], "by": "x"}, ["a", "b"]),
        ({"ids": ["ok", 1, None, "bad id", "../x", "x" * 65]}, ["ok"]),
        ({"ids": "a"}, []),
        ({}, []),
        (None, []),
        (["a"], []),
    ],
)
def test_announced_ids_takes_only_valid_ids_once(message: object, ids: list[str]) -> None:
    assert announced_ids(message) == ids


def test_announced_ids_takes_only_valid_device_ids() -> None:
    assert announced_ids({"ids": ["a", "b-1", 3, "x/y", "", "c" * 65], "by": "x"}) == ["a", "b-1"]
    assert announced_ids({"ids": "a"}) == [] and announced_ids(["a"]) == [] and announced_ids({}) == []


def test_a_trailing_newline_is_no_device_id() -> None:
    assert announced_ids({"ids": ["a\n", "b"]}) == ["b"]


async def test_announcements_are_sorted_unique_and_chunked() -> None:
    seen: list[dict[str, object]] = []

    class Recorder:
        async def publish(self, channel: str, message: dict[str, object]) -> None:
            assert channel == DEVICES_CHANNEL
            seen.append(message)

    ids = [f"d{i:05d}" for i in range(ANNOUNCE_CHUNK + 5)]
    await announce_devices(Recorder(), [*reversed(ids), ids[0]], by="cli")
    assert [m["ids"] for m in seen] == [ids[:ANNOUNCE_CHUNK], ids[ANNOUNCE_CHUNK:]]
    assert all(m["by"] == "cli" for m in seen)
    await announce_devices(None, ids, by="cli")  # no bus: nothing to tell, no error
    assert len(seen) == 2
