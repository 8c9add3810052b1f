"""One execution on its way: a registered Python handler run for one ExecutionContext.

A run reports RUNNING when its handler starts, then exactly one terminal state. Plain `def`
handlers run on a thread of their own, so a slow or blocking handler never holds up the event
loop that reads the stream and heartbeats; `async def` handlers run on the loop itself and must
not block it.

Python cannot kill a thread. A handler is told to stop through `ctx.cancelled` (a
threading.Event), and the run reports its terminal state (TIMED_OUT, CANCELLED, LOST) the moment
it is aborted, without waiting for the handler: a handler that ignores the event cannot hold a
shard's release hostage. What it returns later is logged and discarded. Work that must be
stopped for sure belongs in a child process the handler kills when `ctx.cancelled` is set.

A handler that writes somewhere calls `ctx.assert_lease()` right before the write and makes the
write conditional on `ctx.fencing_token` (docs/fencing.md): a process paused past its lease
(GC, SIGSTOP, a slow disk) may wake before the agent's fence timer runs.
"""

import asyncio
import inspect
import json
import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from stubs import State, agent_pb

# ExecutionUpdate.result and .error: at most 4 KiB of UTF-8.
MAX_TEXT_BYTES = 4096
# An execution's log as this agent keeps it: its newest 1,000 lines (the TypeScript agent's
# default), each cut to 16 KiB, as docs/protocol.md "Execution logs" says.
MAX_LOG_LINES = 1000
MAX_LINE_BYTES = 16384


class LeaseLostError(Exception):
    """Raised by HandlerContext.assert_lease: the run may no longer act on its shard.

    `reason` is "lease-lapsed" (the agent's lease ran out by its own clock: the shard may belong
    to another agent now) or "aborted" (the run was cancelled, timed out, fenced or drained). A
    handler that lets it propagate ends the run LOST rather than FAILED, so that failover runs
    the fire again on the shard's owner.
    """

    def __init__(self, message: str, execution_id: str, fencing_token: int, reason: str):
        super().__init__(message)
        self.execution_id = execution_id
        self.fencing_token = fencing_token
        self.reason = reason


@dataclass
class HandlerContext:
    """What a handler receives; the same fields as the TypeScript SDK's HandlerContext."""

    execution_id: str
    job: str
    shard: int
    shard_count: int
    shard_parameter: str
    parameter: str
    fire_time: datetime
    attempt: int
    agent_id: str
    # Only grows for a shard, across owners and controller terms (term * 2^32 + generation of the
    # assignment): make a write conditional on it, e.g. "... WHERE fencing_token <= %s".
    fencing_token: int
    # Set when the run is aborted (cancel, timeout, fence, drain): stop soon. A fence spares a
    # started run with a disconnect grace until the grace ends without a Welcome.
    # `ctx.cancelled.wait(s)` is a sleep that wakes up early for it.
    cancelled: threading.Event
    log: logging.Logger
    # Whether the agent's lease holds now, by its own monotonic clock (see assert_lease).
    lease_valid: Callable[[], bool] = field(repr=False)
    # W3C trace context of the fire (traceparent, tracestate), to pass on to downstream calls.
    trace_context: dict[str, str] = field(default_factory=dict)
    # For a spec.onFireComplete hook: how each shard of the fire ended, else None.
    fire_outcome: list[dict[str, Any]] | None = None

    def assert_lease(self) -> None:
        """Raises LeaseLostError when the run was aborted, or when the agent's lease has lapsed
        (even before the fence aborts the run). Call it right before each side effect. Safe from
        a handler's thread: it reads one float the event loop writes."""
        if self.cancelled.is_set():
            raise LeaseLostError(f"execution {self.execution_id} was aborted", self.execution_id, self.fencing_token, "aborted")
        if not self.lease_valid():
            raise LeaseLostError(
                f"execution {self.execution_id}: the agent's lease lapsed, so shard {self.job}/{self.shard} "
                f"may belong to another agent now (fencing token {self.fencing_token})",
                self.execution_id, self.fencing_token, "lease-lapsed",
            )


Handler = Callable[[HandlerContext], Any]
Report = Callable[[agent_pb.ExecutionUpdate], None]


def now_ms() -> int:
    """Wall-clock Unix milliseconds: fire instants and report stamps are wall-clock time."""
    return time.time_ns() // 1_000_000


class Run:
    """One execution. Created by the agent on Dispatch; start() runs it, stop() aborts it.

    Every method runs on the event loop; the handler's thread hands its outcome back through
    loop.call_soon_threadsafe.
    """

    def __init__(
        self, context, handler: Handler | None, agent_id: str, report: Report, log: logging.Logger, lease_valid: Callable[[], bool]
    ):
        self.context = context
        self._handler = handler
        self._report = report
        self._log = log
        self._loop = asyncio.get_running_loop()
        self._cancelled = threading.Event()
        self._task: asyncio.Task | None = None
        self._timeout: asyncio.TimerHandle | None = None
        # Set by the agent while the run waits for its fire instant.
        self.start_timer: asyncio.TimerHandle | None = None
        self.started_at = 0
        self.started = False
        self.finished = False
        # How long the run may go on, once started, after the agent's lease lapsed (its disconnect
        # grace, docs/protocol.md step 5); 0: it is aborted at the lapse.
        self.grace_s = context.disconnect_grace_ms / 1000
        # While the agent is fenced: when (monotonic) the grace ends and the run is aborted LOST,
        # unless a Welcome comes first. None otherwise.
        self.abort_at: float | None = None
        # The RUNNING update, listed in the next Hello while the run lasts.
        self.running_update: agent_pb.ExecutionUpdate | None = None
        self.ctx = HandlerContext(
            execution_id=context.execution_id,
            job=context.job,
            shard=context.shard,
            shard_count=context.shard_count,
            shard_parameter=context.shard_parameter,
            parameter=context.parameter,
            fire_time=datetime.fromtimestamp(context.fire_time_unix_ms / 1000, tz=timezone.utc),
            attempt=context.attempt,
            agent_id=agent_id,
            fencing_token=context.fencing_token,
            cancelled=self._cancelled,
            log=self._captured_log(log.getChild(context.execution_id)),
            lease_valid=lease_valid,
            trace_context=dict(context.trace_context),
            fire_outcome=_fire_outcome(context),
        )

    @property
    def execution_id(self) -> str:
        return self.context.execution_id

    def start(self) -> None:
        """Reports RUNNING and starts the handler (the caller checked the lease)."""
        if self.started or self.finished:
            return
        self.started = True
        if self._handler is None:
            self._finish(State.FAILED, error=f"no handler named {self.context.handler!r} on this agent")
            return
        self.started_at = now_ms()
        self.running_update = self._update(State.RUNNING)
        self._report(self.running_update)
        if self.context.timeout_ms > 0:
            timeout_ms = self.context.timeout_ms
            self._timeout = self._loop.call_later(
                timeout_ms / 1000, self._abort, State.TIMED_OUT, f"timed out after {timeout_ms} ms"
            )
        if inspect.iscoroutinefunction(self._handler):
            self._task = self._loop.create_task(self._run_coroutine())
        else:
            # A daemon thread: one the handler never lets go of does not keep the agent from exiting.
            threading.Thread(target=self._run_on_thread, name=self.execution_id, daemon=True).start()

    def stop(self, state: int, reason: str) -> None:
        """Aborts the run with `state` (CANCELLED or LOST) unless it already finished."""
        self._abort(state, reason)

    def _abort(self, state: int, reason: str) -> None:
        if self.finished:
            return
        # Report first: a handler that returns as soon as it sees the event must not be able to
        # turn an abort into SUCCEEDED.
        self._finish(state, error=reason)
        self._cancelled.set()
        if self._task is not None:
            self._task.cancel()

    def _run_on_thread(self) -> None:
        try:
            outcome = (State.SUCCEEDED, "", render_result(self._handler(self.ctx)))
        except BaseException as error:  # noqa: BLE001  (whatever the handler raised fails the run)
            outcome = (self._failed_state(error), error_text(error), "")
        try:
            self._loop.call_soon_threadsafe(self._settled, outcome)
        except RuntimeError:
            pass  # the loop is closed: the agent exited while this handler ran on

    async def _run_coroutine(self) -> None:
        try:
            outcome = (State.SUCCEEDED, "", render_result(await self._handler(self.ctx)))
        except asyncio.CancelledError:
            return  # aborted: the terminal state was reported already
        except Exception as error:  # noqa: BLE001
            outcome = (self._failed_state(error), error_text(error), "")
        self._settled(outcome)

    def _failed_state(self, error: BaseException) -> int:
        """LOST for this run's own assert_lease refusal (also when wrapped as a cause), else FAILED."""
        seen = 0
        while error is not None and seen < 8:
            if isinstance(error, LeaseLostError) and error.execution_id == self.execution_id:
                return State.LOST
            error, seen = error.__cause__, seen + 1
        return State.FAILED

    def _settled(self, outcome: tuple[int, str, str]) -> None:
        state, error, result = outcome
        if self.finished:
            self._log.info(
                "execution %s: handler %s after it was aborted; its outcome is discarded",
                self.execution_id, "returned" if state == State.SUCCEEDED else f"raised ({error})",
            )
            return
        self._finish(state, error=error, result=result)

    def _finish(self, state: int, error: str = "", result: str = "") -> None:
        self.finished = True
        for timer in (self._timeout, self.start_timer):
            if timer is not None:
                timer.cancel()
        update = self._update(state, error=error, result=result)
        update.finished_at_unix_ms = now_ms()
        # This agent sends an execution's log once, with its terminal update: the simplest agent
        # the protocol allows (the TypeScript agent also sends lines while the run goes on).
        self.ctx.log.removeHandler(self._log_lines)
        log = self._log_lines.take()
        if log is not None:
            update.log.CopyFrom(log)
        self._report(update)

    def _captured_log(self, log: logging.Logger) -> logging.Logger:
        """ctx.log, whose lines also go into the execution's log (docs/protocol.md "Execution logs")."""
        self._log_lines = RunLog()
        log.addHandler(self._log_lines)
        return log

    def _update(self, state: int, error: str = "", result: str = "") -> agent_pb.ExecutionUpdate:
        return agent_pb.ExecutionUpdate(
            execution_id=self.execution_id,
            state=state,
            started_at_unix_ms=self.started_at,
            error=truncate_utf8(error),
            result=truncate_utf8(result),
        )


class RunLog(logging.Handler):
    """The lines a handler logs with ctx.log, the newest MAX_LOG_LINES kept (the oldest dropped,
    counted in kept_from). Handlers log from their own thread; deque appends are thread-safe."""

    def __init__(self) -> None:
        super().__init__()
        self._lines: collections.deque = collections.deque(maxlen=MAX_LOG_LINES)
        self._count = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.levelname} {record.getMessage()}"
        except Exception:  # a bad format string must not fail the handler
            text = f"{record.levelname} {record.msg}"
        self._lines.append(agent_pb.LogLine(time_unix_ms=int(record.created * 1000), stream="log", text=truncate_utf8(text, MAX_LINE_BYTES)))
        self._count += 1

    def take(self) -> "agent_pb.ExecutionLog | None":
        lines = list(self._lines)
        if not lines:
            return None
        first = self._count - len(lines)
        return agent_pb.ExecutionLog(first_line=first, kept_from=first, lines=lines)


def render_result(value: Any) -> str:
    """A handler's return value as result text: strings as they are, anything else as JSON."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def error_text(error: BaseException) -> str:
    return str(error) or type(error).__name__


def truncate_utf8(text: str, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """The longest prefix of `text` that fits in `max_bytes` of UTF-8, never cutting a character."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    return encoded[:max_bytes].decode("utf-8", errors="ignore")


def _fire_outcome(context) -> list[dict[str, Any]] | None:
    if not context.HasField("fire_outcome"):
        return None
    return [
        {"shard": o.shard, "state": State.name(o.state), "execution_id": o.execution_id, "error": o.error}
        for o in context.fire_outcome.shards
    ]
