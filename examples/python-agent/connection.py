"""The transport under the agent: one Connect call at a time, and the wait between them."""

import asyncio
import random

import grpc

from stubs import agent_grpc

# Messages waiting to be written before the controller counts as not reading this stream.
MAX_QUEUED = 10_000

_HALF_CLOSE = object()


class Backoff:
    """Exponential backoff with full jitter: many agents reconnecting after a controller restart
    spread out instead of knocking at the same instant."""

    def __init__(self, initial_s: float, max_s: float):
        self._initial_s, self._max_s, self._attempt = initial_s, max_s, 0

    def next(self, cap_s: float | None = None) -> float:
        """The next wait; below `cap_s` too when given, still with full jitter."""
        ceiling = min(self._max_s, self._initial_s * 2 ** min(self._attempt, 31))
        if cap_s is not None:
            ceiling = min(ceiling, cap_s)
        self._attempt += 1
        return random.uniform(0, ceiling)

    def reset(self) -> None:
        self._attempt = 0


class Stream:
    """One Connect call. gRPC allows one write in flight per call, so every message goes through
    a queue that a single writer task drains in order: a Release is written after the reports
    queued before it, a half-close after everything."""

    def __init__(self, address: str):
        self.address = address
        self.channel = grpc.aio.insecure_channel(address)
        self.call = agent_grpc.AgentServiceStub(self.channel).Connect()
        self.ended: asyncio.Future = asyncio.get_running_loop().create_future()
        self.welcomed = False
        self.half_closed = False
        self.seq = 0  # the last heartbeat sent on this stream
        self.acked_seq = 0  # the highest heartbeat acked on this stream
        # While leaving: the last heartbeat sent before the Goodbye on this stream. The ack of a
        # later one says the controller read the Goodbye and all it sent before has arrived.
        self.goodbye_after_seq: int | None = None
        self.last_ack_at = 0.0
        self._queue: asyncio.Queue = asyncio.Queue()
        self.tasks: list[asyncio.Task] = []

    def send(self, message) -> bool:
        """Queues a message; False when the controller has not read the last MAX_QUEUED."""
        self._queue.put_nowait(message)
        return self._queue.qsize() <= MAX_QUEUED

    def half_close(self) -> None:
        self.half_closed = True
        self._queue.put_nowait(_HALF_CLOSE)

    async def write_all(self) -> None:
        try:
            while True:
                message = await self._queue.get()
                if message is _HALF_CLOSE:
                    await self.call.done_writing()
                    return
                await self.call.write(message)
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError):
            return  # the call is over; the reader reports how it ended

    async def dispose(self) -> None:
        for task in self.tasks:
            task.cancel()
        self.call.cancel()
        await self.channel.close()
