"""The generated code of proto/shardline/v1, imported once for the other modules.

generate.sh writes it to gen/ beside this file; a directory already on PYTHONPATH (the test
suite generates into a temporary one) takes precedence. Nothing here is written by hand except
the error that says how to get it.
"""

import os
import sys

_GEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "gen")
# Appended, not prepended: stubs on PYTHONPATH win over a stale gen/ directory.
sys.path.append(_GEN)

try:
    import grpc  # noqa: F401  (imported here so a missing package fails with the message below)
    from shardline.v1 import agent_service_pb2 as agent_pb
    from shardline.v1 import agent_service_pb2_grpc as agent_grpc
    from shardline.v1 import types_pb2 as types_pb
except ImportError as error:
    sys.stderr.write(
        f"cannot import the Shardline stubs or grpcio ({error}); install python3-grpcio and "
        f"python3-protobuf, then run examples/python-agent/generate.sh (writes {_GEN})\n"
    )
    sys.exit(1)

__all__ = ["agent_pb", "agent_grpc", "types_pb", "State"]


class State:
    """ExecutionState values under short names (types.proto)."""

    PENDING = types_pb.EXECUTION_STATE_PENDING
    RUNNING = types_pb.EXECUTION_STATE_RUNNING
    SUCCEEDED = types_pb.EXECUTION_STATE_SUCCEEDED
    FAILED = types_pb.EXECUTION_STATE_FAILED
    TIMED_OUT = types_pb.EXECUTION_STATE_TIMED_OUT
    CANCELLED = types_pb.EXECUTION_STATE_CANCELLED
    LOST = types_pb.EXECUTION_STATE_LOST

    @staticmethod
    def name(state: int) -> str:
        """EXECUTION_STATE_TIMED_OUT -> "timed-out", as the CLI and the logs spell it."""
        return types_pb.ExecutionState.Name(state).removeprefix("EXECUTION_STATE_").lower().replace("_", "-")
