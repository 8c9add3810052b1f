#!/usr/bin/env python3
"""A small Shardline admin client in Python: AdminService from the generated stubs.

    python3 admin_client.py apply -f job.yaml
    python3 admin_client.py trigger billing-rollup [--shards 0,3] [--parameter P]
    python3 admin_client.py jobs | agents
    python3 admin_client.py executions [--job J] [--agent A] [--state succeeded] [--limit N]

--controller HOST:PORT (or $SHARDLINE_CONTROLLER; default 127.0.0.1:7070) picks the controller.
Exit codes follow the shardline CLI: 0 ok, 2 bad input, 3 not found, 4 precondition, 5 controller
unreachable or busy, 1 anything else; errors are one line on stderr.
"""

import argparse
import os
import sys
from datetime import datetime, timezone

# The stubs come from examples/python-agent/generate.sh (gen/ there by default), or PYTHONPATH.
sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python-agent", "gen"))
try:
    import grpc
    from shardline.v1 import admin_service_pb2 as admin_pb
    from shardline.v1 import admin_service_pb2_grpc as admin_grpc
    from shardline.v1 import types_pb2 as types_pb
except ImportError as error:
    sys.exit(f"cannot import grpcio or the Shardline stubs ({error}); run examples/python-agent/generate.sh first")

EXIT_CODES = {
    grpc.StatusCode.INVALID_ARGUMENT: 2,
    grpc.StatusCode.NOT_FOUND: 3,
    grpc.StatusCode.FAILED_PRECONDITION: 4,
    grpc.StatusCode.UNAVAILABLE: 5,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 5,
    grpc.StatusCode.DEADLINE_EXCEEDED: 5,
}
DEADLINE_S = 10


def call(address: str, method: str, request):
    """Calls one AdminService method. A follower of several controller replicas answers
    UNAVAILABLE with the leader's address in the `shardline-leader` trailing metadata: ask it."""
    try:
        return call_once(address, method, request)
    except grpc.RpcError as error:
        leader = dict(error.trailing_metadata() or ()).get("shardline-leader")
        if error.code() != grpc.StatusCode.UNAVAILABLE or not leader or leader == address:
            raise
    return call_once(leader, method, request)


# A listing of 10,000 executions with full 4 KiB results and errors is about 85 MB: far over
# gRPC's default 4 MiB limit on what a client accepts.
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 128 * 1024 * 1024)]


def call_once(address: str, method: str, request):
    with grpc.insecure_channel(address, options=CHANNEL_OPTIONS) as channel:
        return getattr(admin_grpc.AdminServiceStub(channel), method)(request, timeout=DEADLINE_S)


def state_name(state: int) -> str:
    return types_pb.ExecutionState.Name(state).removeprefix("EXECUTION_STATE_").lower().replace("_", "-")


def when(unix_ms: int) -> str:
    if unix_ms == 0:
        return "-"
    return datetime.fromtimestamp(unix_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def table(header: list[str], rows: list[list]) -> None:
    """Prints rows under a header, columns aligned, as `shardline get` does."""
    cells = [header] + [[str(cell) for cell in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("   ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def apply(address: str, flags) -> None:
    with open(flags.file, encoding="utf-8") as file:
        manifest = file.read()
    response = call(address, "ApplyJob", admin_pb.ApplyJobRequest(manifest=manifest))
    print(f"job/{response.job.name} {'applied' if response.changed else 'unchanged'} (revision {response.job.revision})")


def trigger(address: str, flags) -> None:
    request = admin_pb.TriggerJobRequest(name=flags.job, shards=flags.shards, parameter=flags.parameter)
    response = call(address, "TriggerJob", request)
    print(f"job/{flags.job} fired at {when(response.fire_time_unix_ms)}")
    for execution_id in response.execution_ids:
        print(execution_id)


def jobs(address: str, _flags) -> None:
    response = call(address, "ListJobs", admin_pb.ListJobsRequest())
    table(
        ["NAME", "PAUSED", "REVISION", "NEXT FIRE", "LAST FIRE"],
        [[j.name, str(j.paused).lower(), j.revision, when(j.next_fire_unix_ms), when(j.last_fire_unix_ms)] for j in response.jobs],
    )


def agents(address: str, _flags) -> None:
    response = call(address, "ListAgents", admin_pb.ListAgentsRequest())
    table(
        ["ID", "STATE", "SHARDS", "CAPACITY", "HANDLERS"],
        [
            [a.id, types_pb.AgentState.Name(a.state).removeprefix("AGENT_STATE_").lower(), len(a.shards), a.capacity, ",".join(a.handlers)]
            for a in response.agents
        ],
    )


def executions(address: str, flags) -> None:
    request = admin_pb.ListExecutionsRequest(job=flags.job, agent=flags.agent, limit=flags.limit)
    if flags.state:
        request.state = types_pb.ExecutionState.Value("EXECUTION_STATE_" + flags.state.upper().replace("-", "_"))
    response = call(address, "ListExecutions", request)
    table(
        ["ID", "AGENT", "STATE", "FIRE TIME", "ERROR"],
        [[e.id, e.agent or "-", state_name(e.state), when(e.fire_time_unix_ms), e.error] for e in response.executions],
    )


def shard_list(text: str) -> list[int]:
    try:
        shards = [int(part) for part in text.split(",")]
    except ValueError:
        shards = [-1]
    if any(shard < 0 for shard in shards):
        raise argparse.ArgumentTypeError(f"expected shard numbers separated by commas, e.g. 0,3; got {text!r}")
    return shards


def positive(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10_000:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to 10000, got {text!r}")
    return int(text)


class OneLineParser(argparse.ArgumentParser):
    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def main(argv: list[str]) -> int:
    parser = OneLineParser(prog="admin_client.py", description="A small Shardline admin client.")
    parser.add_argument("--controller", default=os.environ.get("SHARDLINE_CONTROLLER", "127.0.0.1:7070"), metavar="HOST:PORT")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    command = commands.add_parser("apply", help="create or update a job from its manifest")
    command.add_argument("-f", "--file", required=True, help="a ShardedJob manifest, YAML or JSON")
    command.set_defaults(run=apply)
    command = commands.add_parser("trigger", help="fire a job now")
    command.add_argument("job")
    command.add_argument("--shards", type=shard_list, default=[], help="only these shards, e.g. 0,3 (default: all)")
    command.add_argument("--parameter", default="", help="replaces the job's parameter for this fire")
    command.set_defaults(run=trigger)
    commands.add_parser("jobs", help="list jobs").set_defaults(run=jobs)
    commands.add_parser("agents", help="list agents").set_defaults(run=agents)
    command = commands.add_parser("executions", help="list executions, newest fire first")
    command.add_argument("--job", default="")
    command.add_argument("--agent", default="")
    command.add_argument("--state", choices=["pending", "running", "succeeded", "failed", "timed-out", "cancelled", "lost", "misfired"])
    command.add_argument("--limit", type=positive, default=100)
    command.set_defaults(run=executions)
    flags = parser.parse_args(argv)
    try:
        flags.run(flags.controller, flags)
    except grpc.RpcError as error:
        print(f"admin_client.py: {flags.command}: {error.code().name}: {error.details()}", file=sys.stderr)
        return EXIT_CODES.get(error.code(), 1)
    except OSError as error:
        print(f"admin_client.py: {flags.command}: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
