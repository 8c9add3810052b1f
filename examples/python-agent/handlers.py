"""Handlers this agent runs: the Python twin of examples/handlers.mjs.

HANDLERS maps handler names (a job's spec.handler) to functions. The agent declares these names
in its Hello and receives shards only of jobs whose handler is among them. A handler gets a
HandlerContext (executions.py) and returns its result (a string as it is, anything else as
JSON); raising fails the execution with the exception's text. When `ctx.cancelled` is set
(cancel, timeout, fence, drain) it should stop soon: its outcome no longer counts.

Run with another module: agent.py --handlers path/to/my_handlers.py
"""

from executions import HandlerContext


def billing_rollup(ctx: HandlerContext):
    ctx.log.info("rolling up %s for the fire of %s", ctx.shard_parameter or f"shard {ctx.shard}", ctx.fire_time.isoformat())
    # Stands for 200 ms of work; wait() returns True at once when the run is aborted.
    if ctx.cancelled.wait(0.2):
        raise RuntimeError("aborted")
    # Right before the write a real rollup would make, conditional on ctx.fencing_token.
    ctx.assert_lease()
    return {"region": ctx.shard_parameter, "rows": 42}


def billing_rollup_done(ctx: HandlerContext):
    """A spec.onFireComplete hook: ctx.fire_outcome says how each shard of the fire ended."""
    failed = [o["shard"] for o in ctx.fire_outcome or [] if o["state"] != "succeeded"]
    if failed:
        raise RuntimeError(f"shards {failed} did not succeed")
    return f"{len(ctx.fire_outcome or [])} shards succeeded"


HANDLERS = {
    "billing-rollup": billing_rollup,
    "billing-rollup-done": billing_rollup_done,
}
