"""Cancellation that a library dropped on the floor.

Python 3.11's ``asyncio.wait_for`` (which aiomqtt awaits for every connect, publish and
disconnect) returns the result when the awaited future completed in the same turn as the
task was cancelled, and the ``CancelledError`` is lost. A loop that goes on from there
(back to its queue, or into a reconnect back-off) then never stops. The task still
counts the request (``Task.cancelling()``), so a long-running loop checks it at every
turn that passed through such a library.
"""

from __future__ import annotations

import asyncio


def raise_if_cancelling() -> None:
    """Raise ``CancelledError`` if this task was asked to stop and the request was lost."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
