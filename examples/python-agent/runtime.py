"""The agent's side of AgentService.Connect, as docs/protocol.md states it.

Why asyncio (grpc.aio) rather than threads: the protocol is a state machine driven by a handful
of events (a controller message, a heartbeat tick, the lease running out, a handler finishing, a
signal). On one event loop every event runs to completion before the next, so the assignment
table, the lease and the runs need no locks, and "check the lease, then start" cannot be torn
apart by another thread. Handlers are ordinary blocking functions on threads of their own
(executions.py); their outcome comes back to the loop as one more event.

Every method of Agent runs on the event loop. One Stream (connection.py) lives per Connect call;
a fresh one, on a fresh channel, is opened for every reconnect.
"""

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

import grpc

from assignments import AssignmentTable, Held
from connection import Backoff, Stream
from executions import Handler, Run, now_ms
from lease import HELLO_SEQ, Lease
from stubs import State, agent_pb

# Used only when a Welcome leaves a field at 0; the controller sends its own.
DEFAULT_HEARTBEAT_INTERVAL_MS = 500
DEFAULT_LEASE_TTL_MS = 2000
# A controller that accepts the connection and never welcomes (a frozen process) is given up.
WELCOME_TIMEOUT_S = 5.0
# How long a drained agent waits for the controller to end the stream after its half-close.
HALF_CLOSE_WAIT_S = 2.0
# The states of a run's own outcome, as opposed to a stop the agent or the controller asked for.
OUTCOMES = frozenset({State.SUCCEEDED, State.FAILED, State.TIMED_OUT})


@dataclass
class AgentOptions:
    """How an Agent is configured; agent.py fills it from the command line."""

    controllers: list[str]
    agent_id: str
    handlers: dict[str, Handler]
    labels: dict[str, str] = field(default_factory=dict)
    capacity: int = 1
    max_concurrent: int = 0
    version: str = "shardline-python-example/0.1.0"
    drain_grace_s: float = 30.0
    backoff_initial_s: float = 0.1
    backoff_max_s: float = 5.0


@dataclass
class Drain:
    reason: str
    grace_timer: asyncio.TimerHandle | None = None
    grace_over: bool = False
    # Half-closed: the drain ends when the controller ends the stream.
    ending: bool = False
    end_timer: asyncio.TimerHandle | None = None


@dataclass
class Unconfirmed:
    """A terminal report not yet confirmed by an ack: listed again in the next Hello."""

    update: agent_pb.ExecutionUpdate
    # Confirmed by the ack of this heartbeat; None while not sent on the current stream.
    confirm_seq: int | None = None


class Agent:
    """Connects, keeps reconnecting, and runs what the controller dispatches, until drained."""

    def __init__(self, options: AgentOptions, log: logging.Logger):
        self.options = options
        self._log = log
        self._table = AssignmentTable()
        self._lease = Lease()
        self._backoff = Backoff(options.backoff_initial_s, options.backoff_max_s)
        self._runs: dict[str, Run] = {}
        self._unconfirmed: dict[str, Unconfirmed] = {}
        self._outbox: list[agent_pb.ExecutionUpdate] = []
        self._flush_handle: asyncio.Handle | None = None
        self._stream: Stream | None = None
        self._address = options.controllers[0]
        self._next_address = 1
        self._redirected = False  # the last stream ended on a Redirect: no backoff, no rotation
        self._unresponsive = False  # this side gave up on the last stream: try another replica
        self._reconnect_delay_s = 0.0
        self._heartbeat_s = DEFAULT_HEARTBEAT_INTERVAL_MS / 1000
        self._lease_ttl_s = DEFAULT_LEASE_TTL_MS / 1000
        self._dispatch_ahead_ms = 0
        self._fenced = False
        self._fence_reason = ""
        self._stopped = False
        self._drained = False
        # One per process, the same on every reconnect: the controller tells this process
        # reconnecting from a second process that claims the same agent id.
        self.instance_id = str(uuid.uuid4())
        # Set when the controller refused this process because another holds its agent id.
        self.refusal: str | None = None
        self._drain: Drain | None = None
        self._heartbeat_timer: asyncio.TimerHandle | None = None
        self._fence_timer: asyncio.TimerHandle | None = None
        # While fenced: wakes when the disconnect grace of the first run that went on ends.
        self._grace_timer: asyncio.TimerHandle | None = None
        self._welcome_timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None

    @property
    def drained(self) -> bool:
        """True when the agent stopped by draining (as opposed to stop())."""
        return self._drained

    # ----- the connection loop -------------------------------------------------------------

    async def run(self) -> None:
        """Connects and reconnects with backoff until drain() completes or stop() is called."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while not self._stopped:
            stream = self._open()
            await stream.ended
            await stream.dispose()
            if self._stopped:
                break
            if self._reconnect_delay_s > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), self._reconnect_delay_s)
                except asyncio.TimeoutError:
                    pass
        self._cancel_timers()

    def _open(self) -> Stream:
        # A lease that ran out while disconnected fences now, before a Hello could claim shards
        # that may be another agent's by now (the fence timer may not have had its turn yet).
        if self._lease.granted:
            self._lease_lapsed()
        stream = Stream(self._address)
        self._stream = stream
        self._lease.forget_pending()
        self._log.info("connecting to %s", stream.address)
        hello = self._hello()
        # The Hello counts as heartbeat 0: the lease the Welcome grants runs from now.
        self._lease.sent(HELLO_SEQ, time.monotonic())
        stream.send(agent_pb.ConnectRequest(hello=hello))
        stream.tasks = [asyncio.create_task(stream.write_all()), asyncio.create_task(self._read(stream))]
        self._welcome_timer = self._loop.call_later(WELCOME_TIMEOUT_S, self._welcome_overdue, stream)
        return stream

    def _hello(self) -> agent_pb.Hello:
        """Who this agent is, plus what it still holds from an earlier stream."""
        executions = []
        # Every run the agent may still start or is running: RUNNING, or PENDING when dispatched
        # ahead of its instant. One left out would be taken for lost and run again elsewhere.
        for run in self._runs.values():
            executions.append(run.running_update or agent_pb.ExecutionUpdate(execution_id=run.execution_id, state=State.PENDING))
        # Terminal reports the controller has not confirmed; the Welcome confirms them.
        for pending in self._unconfirmed.values():
            executions.append(pending.update)
            pending.confirm_seq = HELLO_SEQ
        self._outbox.clear()  # all covered by the two lists above
        o = self.options
        return agent_pb.Hello(
            agent_id=o.agent_id,
            labels=o.labels,
            capacity=o.capacity,
            handlers=sorted(o.handlers),
            version=o.version,
            # A fenced agent holds nothing here: its table was cleared by the fence.
            held=[held.to_proto() for held in self._table.shards()],
            executions=executions,
            max_concurrent=o.max_concurrent,
            instance_id=self.instance_id,
        )

    async def _read(self, stream: Stream) -> None:
        try:
            while True:
                message = await stream.call.read()
                if message is grpc.aio.EOF:
                    break
                self._on_message(stream, message)
            code, details = await stream.call.code(), await stream.call.details()
        except grpc.aio.AioRpcError as error:
            code, details = error.code(), error.details()
        except Exception as error:  # a bug in a message handler must not leave the stream hanging
            self._log.exception("failed to handle a controller message")
            code, details = grpc.StatusCode.INTERNAL, f"agent error: {error}"
        self._stream_ended(stream, code, details)

    def _close_stream(self, code: grpc.StatusCode, details: str) -> None:
        """Ends the current stream from this side; the run loop then reconnects."""
        if self._stream is not None:
            self._stream_ended(self._stream, code, details)

    def _stream_ended(self, stream: Stream, code: grpc.StatusCode, details: str) -> None:
        if stream.ended.done():
            return
        stream.ended.set_result((code, details))
        if stream is not self._stream:
            return
        self._stream = None
        for timer in (self._welcome_timer, self._heartbeat_timer):
            if timer is not None:
                timer.cancel()
        redirected = self._choose_next_address(stream.welcomed)
        # What was not sent goes into the next Hello; what was sent but not confirmed too.
        self._outbox.clear()
        for pending in self._unconfirmed.values():
            pending.confirm_seq = None
        if code == grpc.StatusCode.ALREADY_EXISTS and not stream.welcomed:
            # Another process holds this agent id: retrying would be refused forever. Stop, and
            # let main() exit non-zero with the controller's message.
            self.refusal = details
            self._log.error("the controller refused this agent: %s", details)
            self.stop("another process holds the agent id")
            return
        if code == grpc.StatusCode.INVALID_ARGUMENT:
            self._log.error("the controller refused this agent: %s; fix the agent's flags; retrying meanwhile", details)
        elif not self._stopped and not redirected and not (self._drain and self._drain.ending):
            self._log.warning("stream to %s closed: %s %s", stream.address, code.name, details)
        if self._drain is not None and (self._drain.ending or self._nothing_to_hand_back()):
            self._finish_drain()
            return
        self._reconnect_delay_s = 0.0 if redirected else self._backoff.next(self._urgent_reconnect_cap())

    def _urgent_reconnect_cap(self) -> float | None:
        """While the lease holds or a started run is held (going on in its disconnect grace), a
        wait past the lease or the grace is wasted: the agent fences, or aborts those runs, while a
        controller may be back already. Each wait is then below half a lease, so the agent tries
        at least twice per lease; with nothing to keep, the backoff grows to its maximum."""
        holding = self._lease.valid(time.monotonic()) or any(run.started for run in self._runs.values())
        return self._lease_ttl_s / 2 if holding else None

    def _choose_next_address(self, welcomed: bool) -> bool:
        """After a stream that never got a Welcome, or that this side gave up on, the next
        controller replica given is tried. Returns True when the stream ended on a Redirect."""
        redirected, unresponsive = self._redirected, self._unresponsive
        self._redirected = self._unresponsive = False
        if redirected or (welcomed and not unresponsive):
            return redirected
        addresses = self.options.controllers
        if len(addresses) > 1 or self._address != addresses[0]:
            self._address = addresses[self._next_address % len(addresses)]
            self._next_address += 1
        return False

    def _welcome_overdue(self, stream: Stream) -> None:
        if stream is self._stream and not stream.welcomed:
            self._unresponsive = True
            self._close_stream(grpc.StatusCode.UNAVAILABLE, f"no Welcome within {WELCOME_TIMEOUT_S:g} s")

    def _send(self, message: agent_pb.ConnectRequest) -> None:
        stream = self._stream
        if stream is None or stream.half_closed:
            return  # the next Hello says what matters
        if not stream.send(message):
            self._close_stream(grpc.StatusCode.RESOURCE_EXHAUSTED, "the controller is not reading this agent's stream")

    # ----- controller messages -------------------------------------------------------------

    def _on_message(self, stream: Stream, message: agent_pb.ConnectResponse) -> None:
        if stream is not self._stream:
            return
        kind = message.WhichOneof("kind")
        if not self._table.accept_term(message.term):
            self._log.warning("ignored a %s of term %d, below term %d already seen", kind, message.term, self._table.highest_term)
            if kind == "welcome":
                # A deposed leader: this whole stream talks to the wrong controller.
                self._close_stream(grpc.StatusCode.FAILED_PRECONDITION, "the controller's term is older than one already seen")
            return
        if kind == "welcome":
            self._on_welcome(stream, message.welcome, message.term)
        elif kind == "heartbeat_ack":
            self._on_ack(stream, message.heartbeat_ack)
        elif kind == "assignment_update":
            self._on_assignments(message.assignment_update)
        elif kind == "dispatch":
            self._on_dispatch(message.dispatch)
        elif kind == "cancel":
            self._on_cancel(message.cancel)
        elif kind == "redirect":
            self._on_redirect(message.redirect)
        else:
            # A newer controller may say things this agent does not know; they are not for it.
            self._log.warning("ignored a controller message of an unknown kind")

    def _on_welcome(self, stream: Stream, welcome: agent_pb.Welcome, term: int) -> None:
        if stream.welcomed:
            self._log.warning("ignored a second Welcome on one stream")
            return
        self._heartbeat_s = (welcome.heartbeat_interval_ms or DEFAULT_HEARTBEAT_INTERVAL_MS) / 1000
        self._lease_ttl_s = (welcome.lease_ttl_ms or DEFAULT_LEASE_TTL_MS) / 1000
        self._dispatch_ahead_ms = welcome.dispatch_ahead_ms
        stream.welcomed = True
        self._welcome_timer.cancel()
        self._backoff.reset()
        stream.last_ack_at = time.monotonic()
        # The Welcome acks the Hello: the lease runs from the Hello's send time, and the reports
        # the Hello listed are confirmed.
        if self._lease.ack(HELLO_SEQ, self._lease_ttl_s):
            self._lease_renewed()
        self._confirm(HELLO_SEQ)
        if not self._lease.valid(time.monotonic()):
            # It came after the lease it grants had lapsed (the Hello took longer than a lease to
            # be answered): it grants nothing. Staying on this stream would not help: the
            # controller counts the lease valid and would keep dispatching work this agent must
            # refuse, each refusal coming straight back as a failover run.
            reason = "the Welcome came after the lease it grants had lapsed"
            if self._fenced:
                self._log.warning("%s: staying fenced and reconnecting", reason)
                self._unresponsive = True
                self._close_stream(grpc.StatusCode.UNAVAILABLE, reason)
            else:
                self._fence(reason)
            return
        self._log.info(
            "connected to %s: session %s, term %d, heartbeat %d ms, lease %d ms, dispatch ahead %d ms",
            stream.address, welcome.session_id, term, self._heartbeat_s * 1000, self._lease_ttl_s * 1000, self._dispatch_ahead_ms,
        )
        self._heartbeat_timer = self._loop.call_later(self._heartbeat_s, self._heartbeat)
        self._flush()
        if self._drain is not None:
            self._say_goodbye()
            self._maybe_end_drain()

    def _heartbeat(self) -> None:
        self._heartbeat_timer = None
        stream = self._stream
        if stream is None or not stream.welcomed or stream.half_closed:
            return
        now = time.monotonic()
        # A late fence timer must not let the stall check below reconnect first: a Hello sent
        # before the fence would still list the runs the fence is about to abort.
        if not self._fenced and not self._lease.valid(now):
            self._fence(f"no heartbeat ack within the lease of {self._lease_ttl_s * 1000:g} ms")
            return
        if now - stream.last_ack_at > self._lease_ttl_s:
            # Nothing came back for a whole lease: the stream is stuck even if it looks open.
            self._unresponsive = True
            self._close_stream(grpc.StatusCode.UNAVAILABLE, f"no heartbeat ack for {self._lease_ttl_s * 1000:g} ms")
            return
        self._send_heartbeat(stream, now)
        self._heartbeat_timer = self._loop.call_later(self._heartbeat_s, self._heartbeat)

    def _send_heartbeat(self, stream: Stream, now: float) -> None:
        stream.seq += 1
        self._lease.sent(stream.seq, now)
        self._send(agent_pb.ConnectRequest(heartbeat=agent_pb.Heartbeat(seq=stream.seq)))

    def _on_ack(self, stream: Stream, ack: agent_pb.HeartbeatAck) -> None:
        # A leader of several replicas may grant less than the Welcome's TTL, never more.
        ttl_s = min(ack.lease_ttl_ms / 1000, self._lease_ttl_s) if ack.lease_ttl_ms else self._lease_ttl_s
        if not self._lease.ack(ack.seq, ttl_s):
            return
        stream.last_ack_at = time.monotonic()
        stream.acked_seq = max(stream.acked_seq, ack.seq)
        self._confirm(ack.seq)
        self._lease_renewed()
        self._maybe_end_drain()

    def _on_redirect(self, redirect: agent_pb.Redirect) -> None:
        if not redirect.leader_address:
            self._log.warning("ignored a Redirect without an address")
            return
        self._log.info("redirected from %s to the leader at %s", self._address, redirect.leader_address)
        self._redirected = True
        self._backoff.reset()  # progress, not a failure: the leader is tried at once
        self._address = redirect.leader_address
        self._close_stream(grpc.StatusCode.CANCELLED, f"redirected to {redirect.leader_address}")

    # ----- the lease and fencing -----------------------------------------------------------

    def _lease_renewed(self) -> None:
        """An ack or a Welcome renewed the lease from its heartbeat's (or Hello's) send time. A
        fenced agent unfences only if that lease holds now: a Welcome that comes after the lease
        it would start has lapsed grants nothing, and the runs going on keep their deadline."""
        if self._fenced and self._lease.valid(time.monotonic()):
            self._fenced = False
            self._log.info("lease renewed; no longer fenced")
            # A controller answered within their grace: the runs that went on are the agent's
            # again (the Hello listed them; the controller counts them as running, or cancels them).
            kept = [run for run in self._runs.values() if run.abort_at is not None]
            for run in kept:
                run.abort_at = None
            if self._grace_timer is not None:
                self._grace_timer.cancel()
                self._grace_timer = None
            if kept:
                self._log.info(
                    "a controller answered within the disconnect grace: %s carry on", ", ".join(run.execution_id for run in kept)
                )
        if self._fence_timer is not None:
            self._fence_timer.cancel()
        delay = self._lease.expires_at - time.monotonic()
        self._fence_timer = self._loop.call_later(max(0.0, delay), self._check_lease)

    def _check_lease(self) -> None:
        self._fence_timer = None
        if self._stopped or self._fenced:
            return
        if self._lease.valid(time.monotonic()):
            self._lease_renewed()
        else:
            self._fence(f"no heartbeat ack within the lease of {self._lease_ttl_s * 1000:g} ms")

    def _lease_valid(self) -> bool:
        """What a handler's ctx.assert_lease asks, from any thread: the lease by this agent's clock."""
        return self._lease.valid(time.monotonic())

    def _lease_lapsed(self) -> bool:
        """Checked wherever work would start, not only by the fence timer: a process paused past
        its lease runs its overdue callbacks oldest first, and a start may come before the fence."""
        if not self._fenced and not self._lease.valid(time.monotonic()):
            self._fence(f"no heartbeat ack within the lease of {self._lease_ttl_s * 1000:g} ms")
        return self._fenced

    def _fence(self, reason: str) -> None:
        """The lease lapsed: the shards may belong to another agent by now. Start nothing new,
        and stop every run but the started ones with a disconnect grace: those go on until the
        lapse plus their grace (counted from the lapse, not from now: a process frozen past the
        grace aborts them at once) while the agent looks for a controller."""
        self._fenced = True
        self._fence_reason = reason
        lapsed_at = self._lease.expires_at
        graced = [run for run in self._runs.values() if run.started and run.grace_s > 0]
        for run in graced:
            run.abort_at = lapsed_at + run.grace_s
        if graced:
            self._log.warning(
                "fenced: %s; starting nothing new; %d started run(s) go on for their disconnect grace while a controller is sought",
                reason, len(graced),
            )
        else:
            self._log.warning("fenced: %s; aborting %d run(s) and starting nothing new", reason, len(self._runs))
        # Forgotten first, so that no run ending below releases a shard: the next Hello claims
        # none, and the controller's snapshot on the next stream says which are still ours.
        self._table.clear()
        for run in list(self._runs.values()):
            if run.abort_at is None:
                run.stop(State.LOST, f"fenced: {reason}")
        self._abort_past_grace()
        # The open stream let the lease lapse, so it is stuck or cut: start over on a new one.
        self._unresponsive = True
        self._close_stream(grpc.StatusCode.UNAVAILABLE, f"fenced: {reason}")

    def _abort_past_grace(self) -> None:
        """While fenced: aborts LOST every run whose disconnect grace is over, and wakes again
        when the next one's ends."""
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            self._grace_timer = None
        if not self._fenced or self._stopped:
            return
        now = time.monotonic()
        for run in [run for run in self._runs.values() if run.abort_at is not None and run.abort_at <= now]:
            run.abort_at = None
            run.stop(
                State.LOST,
                f"fenced: {self._fence_reason}, and no controller answered within the disconnect grace of {run.grace_s:g} s",
            )
        pending = [run.abort_at for run in self._runs.values() if run.abort_at is not None]
        if pending:
            self._grace_timer = self._loop.call_later(max(0.0, min(pending) - now), self._abort_past_grace)

    def _settled_too_late(self, run: Run) -> bool:
        """A run's own outcome that comes once the lease has lapsed and the run's grace is over
        (a frozen process whose fence has not run yet): the fire may have run elsewhere meanwhile,
        so the outcome is not the agent's to give. Within the grace it counts: the controller holds
        the fire for the run until then."""
        now = time.monotonic()
        if not self._lease.granted or self._lease.valid(now):
            return False
        return not (run.grace_s > 0 and now < self._lease.expires_at + run.grace_s)

    def _reported_lost(self, update: agent_pb.ExecutionUpdate) -> agent_pb.ExecutionUpdate:
        state = State.name(update.state)
        fenced = f" ({self._fence_reason})" if self._fenced else ""
        self._log.warning("execution %s finished (%s) after the lease lapsed: reported lost", update.execution_id, state)
        lost = agent_pb.ExecutionUpdate()
        lost.CopyFrom(update)
        lost.state = State.LOST
        lost.result = ""
        lost.error = f"finished ({state}) after the agent's lease lapsed{fenced}: the fire may have run elsewhere, so this outcome is not used"
        return lost

    # ----- assignments ---------------------------------------------------------------------

    def _on_assignments(self, update: agent_pb.AssignmentUpdate) -> None:
        changes = self._table.apply(update)
        for ref in changes.ignored:
            self._log.debug("ignored an older assignment %s", ref)
        for held in changes.dropped:
            self._stop_runs_on(held, State.LOST, f"shard {held.job}/{held.shard} is no longer assigned to this agent")
        releases = list(changes.unknown_revokes)
        if self._drain is not None:
            # A leaving agent gives back whatever it is handed, once the controller has read its
            # Goodbye (_maybe_end_drain releases it then).
            self._table.revoke_all()
        else:
            for held in changes.revoked:
                if self._runs_on(held) == 0:
                    self._table.remove(held)
                    releases.append(held)
        if changes.added or changes.dropped or changes.revoked:
            self._log.info(
                "shards%s: %s",
                " (snapshot)" if update.snapshot else "",
                "; ".join(
                    f"{label} {' '.join(map(str, items))}"
                    for label, items in (("added", changes.added), ("revoked", changes.revoked), ("dropped", changes.dropped))
                    if items
                ),
            )
        self._release(releases)
        self._maybe_end_drain()

    def _release(self, refs: list[Held]) -> None:
        """Sends a Release after the reports of the runs that just ended: the controller must see
        a run finish before its shard is released, or it would count the run as lost. Without a
        session nothing is sent: leaving the shards out of the next Hello says the same."""
        stream = self._stream
        if not refs or stream is None or not stream.welcomed or stream.half_closed:
            return
        self._flush()
        self._log.info("released %s", " ".join(map(str, refs)))
        self._send(agent_pb.ConnectRequest(release=agent_pb.Release(assignments=[ref.to_proto() for ref in refs])))

    def _release_idle(self) -> None:
        idle = [held for held in self._table.shards() if held.revoking and self._runs_on(held) == 0]
        for held in idle:
            self._table.remove(held)
        self._release(idle)

    def _runs_on(self, held: Held) -> int:
        return sum(1 for run in self._runs.values() if _shard_of(run) == held.key)

    def _stop_runs_on(self, held: Held, state: int, reason: str) -> None:
        for run in [run for run in self._runs.values() if _shard_of(run) == held.key]:
            run.stop(state, reason)

    # ----- executions ----------------------------------------------------------------------

    def _on_dispatch(self, dispatch: agent_pb.Dispatch) -> None:
        for context in dispatch.executions:
            if context.execution_id in self._runs:
                continue  # dispatched again (after a reconnect): it is already ours
            refusal = self._refusal(context)
            if refusal is not None:
                self._log.warning("refused execution %s: %s", context.execution_id, refusal)
                self._on_report(self._terminal(context.execution_id, State.LOST, refusal))
                continue
            if any(context.HasField(executor) for executor in ("script", "http", "kubernetes")):
                # This agent declares no executors in its Hello, so a controller never sends these.
                self._on_report(self._terminal(context.execution_id, State.FAILED, "this agent runs only in-process Python handlers"))
                continue
            run = Run(context, self.options.handlers.get(context.handler), self.options.agent_id, self._on_report, self._log, self._lease_valid)
            self._runs[run.execution_id] = run
            self._start_when_due(run, time.monotonic() + self._dispatch_ahead_ms / 1000)

    def _start_when_due(self, run: Run, latest: float) -> None:
        """Starts a run at its fire instant by this agent's wall clock, never before it, and in
        any case by `latest` (monotonic): a skewed clock cannot hold work back longer than the
        controller dispatches ahead. Until then the run is the agent's like a running one: a
        Cancel, a fence or a drain ends it and it never starts."""
        run.start_timer = None
        wait_s = min((run.context.fire_time_unix_ms - now_ms()) / 1000, latest - time.monotonic())
        if wait_s > 0:
            # Timers may wake a little early; the check above runs again when this one fires.
            run.start_timer = self._loop.call_later(wait_s, self._start_when_due, run, latest)
            return
        if self._lease_lapsed():
            return  # the fence aborted the run
        run.start()

    def _refusal(self, context: agent_pb.ExecutionContext) -> str | None:
        """Why a dispatched execution may not run here, or None when it may."""
        if self._stopped or (self._drain is not None and not self._takes_crossed_dispatch()):
            return "the agent is shutting down"
        if self._lease_lapsed():
            return "the agent holds no valid lease"
        if context.HasField("fire_outcome"):
            return None  # a completion hook belongs to no shard: the lease alone fences it
        if not context.HasField("assignment"):
            return "the dispatch names no assignment"
        wanted = Held.of(context.assignment)
        if self._table.holds(wanted):
            return None
        held = self._table.get(wanted.job, wanted.shard)
        if held is None:
            return f"the agent does not hold {wanted}"
        # Sent before the controller read the Goodbye, for a shard only the drain itself revoked:
        # it runs, as it would have had it come before the Goodbye. (A revoke from the controller
        # comes after every dispatch it sent for the shard.)
        if self._takes_crossed_dispatch() and held.pair == wanted.pair:
            return None
        if held.revoking:
            return f"the agent is releasing {wanted}"
        return f"the agent holds {held}, not {wanted}"

    def _on_cancel(self, cancel: agent_pb.Cancel) -> None:
        for execution_id in cancel.execution_ids:
            run = self._runs.get(execution_id)
            if run is not None:
                run.stop(State.CANCELLED, cancel.reason or "cancelled")

    @staticmethod
    def _terminal(execution_id: str, state: int, error: str) -> agent_pb.ExecutionUpdate:
        return agent_pb.ExecutionUpdate(execution_id=execution_id, state=state, finished_at_unix_ms=now_ms(), error=error)

    def _on_report(self, update: agent_pb.ExecutionUpdate) -> None:
        """Every update a run (or a refused dispatch) produces comes through here."""
        run = self._runs.get(update.execution_id)
        if run is not None and update.state in OUTCOMES and self._settled_too_late(run):
            update = self._reported_lost(update)
        if update.state == State.RUNNING:
            self._log.info("execution %s running", update.execution_id)
        else:
            self._runs.pop(update.execution_id, None)
            self._unconfirmed[update.execution_id] = Unconfirmed(update)
            self._log.info("execution %s %s%s", update.execution_id, State.name(update.state), f": {update.error}" if update.error else "")
        self._outbox.append(update)
        # Reports of one event-loop turn go out as one ExecutionUpdates message.
        if self._flush_handle is None:
            self._flush_handle = self._loop.call_soon(self._flush)
        if run is not None and update.state != State.RUNNING:
            self._run_ended(run)

    def _run_ended(self, run: Run) -> None:
        if self._drain is not None:
            self._maybe_end_drain()  # a leaving agent's shards go back as the drain says
            return
        key = _shard_of(run)
        held = self._table.get(*key) if key is not None else None
        if held is not None and held.revoking and self._runs_on(held) == 0:
            self._table.remove(held)
            self._release([held])

    def _flush(self) -> None:
        """Sends the reports waiting in the outbox. Before the Welcome they wait for it; without
        a stream they are dropped, because the next Hello lists every run and every terminal
        report not yet confirmed."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        stream = self._stream
        if not self._outbox:
            return
        if stream is None:
            self._outbox.clear()
            return
        if not stream.welcomed:
            return
        # A run that started and ended within this turn needs only its terminal report.
        ended = {u.execution_id for u in self._outbox if u.state != State.RUNNING}
        updates = [u for u in self._outbox if u.state != State.RUNNING or u.execution_id not in ended]
        self._outbox.clear()
        # Confirmed by the ack of the next heartbeat, which is written after this batch.
        for update in updates:
            pending = self._unconfirmed.get(update.execution_id)
            if pending is not None and pending.update is update:
                pending.confirm_seq = stream.seq + 1
        self._send(agent_pb.ConnectRequest(execution_updates=agent_pb.ExecutionUpdates(updates=updates)))

    def _confirm(self, seq: int) -> None:
        for execution_id, pending in list(self._unconfirmed.items()):
            if pending.confirm_seq is not None and pending.confirm_seq <= seq:
                del self._unconfirmed[execution_id]

    # ----- leaving -------------------------------------------------------------------------

    def drain(self, reason: str) -> None:
        """Leaves gracefully (SIGTERM): Goodbye, let runs finish (up to the drain grace); once a
        heartbeat sent after the Goodbye is acked, release each shard as it goes idle and
        half-close when nothing runs; stop once the controller ends the stream."""
        if self._drain is not None or self._stopped:
            return
        self._drain = Drain(reason)
        self._log.info("draining (%s): %d run(s) to finish within %g s", reason, len(self._runs), self.options.drain_grace_s)
        self._drain.grace_timer = self._loop.call_later(self.options.drain_grace_s, self._drain_grace_over)
        self._table.revoke_all()
        if self._stream is not None and self._stream.welcomed:
            self._say_goodbye()
        elif self._nothing_to_hand_back():
            self._finish_drain()
            return
        self._maybe_end_drain()

    def stop(self, reason: str) -> None:
        """Stops at once, without a Goodbye: the controller treats the agent as lost."""
        if self._stopped:
            return
        if self._drain is not None and self._drain.ending:
            self._finish_drain()  # everything was handed back already
            return
        self._stopped = True
        self._log.warning("stopping at once (%s), without a goodbye", reason)
        for run in list(self._runs.values()):
            run.stop(State.LOST, "the agent stopped")
        self._close_stream(grpc.StatusCode.CANCELLED, reason)
        self._cancel_timers()
        self._wake.set()

    def _say_goodbye(self) -> None:
        stream = self._stream
        self._flush()
        self._send(agent_pb.ConnectRequest(goodbye=agent_pb.Goodbye(reason=self._drain.reason)))
        self._log.info("said goodbye (%s); handing back %d shard(s)", self._drain.reason, len(self._table))
        # The ack of this heartbeat, one round trip away, is what the releases and the half-close
        # wait for.
        stream.goodbye_after_seq = stream.seq
        self._send_heartbeat(stream, time.monotonic())

    def _goodbye_read(self) -> bool:
        """The controller has read the Goodbye on this stream, and everything it sent before
        reading it has arrived: a heartbeat sent after the Goodbye was acked. From then on it sends
        no new work, and a shard nothing runs on may be released."""
        stream = self._stream
        return (
            self._drain is not None
            and stream is not None
            and stream.welcomed
            and stream.goodbye_after_seq is not None
            and stream.acked_seq > stream.goodbye_after_seq
        )

    def _takes_crossed_dispatch(self) -> bool:
        """A Dispatch the controller sent before it read the Goodbye may still come, and runs if
        it names a shard at the pair held: until the Goodbye is read, the grace ends, or the drain
        ends."""
        drain = self._drain
        return drain is not None and not drain.ending and not drain.grace_over and not self._goodbye_read()

    def _maybe_end_drain(self) -> None:
        """Once the controller has acked a heartbeat sent after the Goodbye, release each shard
        nothing runs on, and once nothing runs at all, half-close. The controller acks a heartbeat
        only after handling everything before it, so by then it has read the Goodbye, and whatever
        it sent before reading it (an add, a revoke, a Dispatch) has arrived and been answered
        here: a held run, a Release. After the half-close nothing could be answered."""
        drain, stream = self._drain, self._stream
        if drain is None or drain.ending or self._stopped or stream is None or not self._goodbye_read():
            return
        self._release_idle()
        if self._runs:
            return
        self._flush()
        drain.ending = True
        for timer in (drain.grace_timer, self._heartbeat_timer):
            if timer is not None:
                timer.cancel()
        self._log.info("drained; closing the stream")
        stream.half_close()
        drain.end_timer = self._loop.call_later(HALF_CLOSE_WAIT_S, self._finish_drain)

    def _nothing_to_hand_back(self) -> bool:
        """Draining with no controller to talk to, nothing running and no report to deliver:
        the lease moves the shards without this agent. With a stream open (its Hello out, the
        Welcome not come yet) it waits: a controller that reads the Hello grants it shards and
        runs, which only a Goodbye hands back at once."""
        return self._drain is not None and self._stream is None and not self._runs and not self._unconfirmed

    def _drain_grace_over(self) -> None:
        drain = self._drain
        if drain is None or drain.ending or self._stopped:
            return
        drain.grace_over = True
        self._log.warning("drain grace over: aborting %d run(s)", len(self._runs))
        for run in list(self._runs.values()):
            run.stop(State.LOST, f"the agent is shutting down; the drain grace of {self.options.drain_grace_s:g} s passed")
        if self._stream is not None and self._stream.welcomed:
            self._maybe_end_drain()
        else:
            self._log.warning("no controller reachable within the drain grace; leaving without a goodbye")
            self._finish_drain()

    def _finish_drain(self) -> None:
        if self._drain is None or self._stopped:
            return
        self._stopped = self._drained = True
        self._close_stream(grpc.StatusCode.CANCELLED, "drained")
        self._cancel_timers()
        self._wake.set()

    def _cancel_timers(self) -> None:
        timers = [self._heartbeat_timer, self._fence_timer, self._grace_timer, self._welcome_timer, self._flush_handle]
        if self._drain is not None:
            timers += [self._drain.grace_timer, self._drain.end_timer]
        for timer in timers:
            if timer is not None:
                timer.cancel()


def _shard_of(run: Run) -> tuple[str, int] | None:
    """The (job, shard) a run belongs to; None for a completion hook, which belongs to no shard."""
    if not run.context.HasField("assignment"):
        return None
    ref = run.context.assignment.shard
    return (ref.job, ref.shard)
