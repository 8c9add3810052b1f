#!/usr/bin/env python3
"""A Shardline agent in Python: the reference for writing one in any language.

    examples/python-agent/generate.sh          # once: the stubs, from proto/shardline/v1
    python3 examples/python-agent/agent.py --controller 127.0.0.1:7070 --id py-1 --label zone=eu-1

It speaks AgentService.Connect as docs/protocol.md states it, with grpcio, the generated stubs
and the standard library only. Where to read:
  runtime.py      the stream: Hello/Welcome, heartbeats and the lease, fencing, assignments,
                  dispatch, reports, reconnects and redirects, the drain on SIGTERM
  assignments.py  the held shards and the (term, generation) rules
  lease.py        lease arithmetic
  executions.py   running one execution with a Python handler (RUNNING, then one outcome)
  handlers.py     the handlers this agent declares (--handlers loads another module)

SIGTERM or SIGINT drains (Goodbye, running work finishes, shards handed back, exit 0); a second
one stops at once (exit 1). Bad flags exit 2 with one line naming the flag. While another process
holds the agent id, the controller refuses this one (ALREADY_EXISTS): it exits 4 with the
controller's message. One log line per state change goes to stderr.
"""

import argparse
import asyncio
import importlib.util
import logging
import os
import re
import signal
import socket
import sys

from runtime import Agent, AgentOptions

HERE = os.path.dirname(os.path.abspath(__file__))
# The controller's own rules (controller/core/hello-rules.ts), checked here so a typo fails at
# once with the flag's name instead of as a refused Hello.
AGENT_ID = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,251}[a-z0-9])?$")
HANDLER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
HOST_PORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$")


class OneLineParser(argparse.ArgumentParser):
    """Bad input: one line on stderr that names the flag, exit 2 (argparse prints usage too)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message}\n")


def integer(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected an integer from {low} to {high}, got {text!r}")
        return value

    return parse


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"expected a number of seconds from 0 to 86400, got {text!r}")
    return value


def controllers(text: str) -> list[str]:
    addresses = [part.strip() for part in text.split(",")]
    for address in addresses:
        if not HOST_PORT.match(address):
            raise argparse.ArgumentTypeError(f"expected HOST:PORT, or several separated by commas, got {text!r}")
    return addresses


def agent_id(text: str) -> str:
    if not AGENT_ID.match(text):
        raise argparse.ArgumentTypeError(
            f"expected 1-253 characters of a-z, 0-9, '.', '_' and '-', starting and ending with a letter or digit, got {text!r}"
        )
    return text


def label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or len(key) > 253 or len(value) > 253:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (a key of 1-253 characters), got {text!r}")
    return key, value


def parse_flags(argv: list[str]) -> argparse.Namespace:
    parser = OneLineParser(prog="agent.py", description="A Shardline agent in Python.")
    parser.add_argument(
        "--controller", type=controllers, default=os.environ.get("SHARDLINE_CONTROLLER", "127.0.0.1:7070"),
        help="the controller's gRPC address HOST:PORT, or every replica's, comma-separated (default: $SHARDLINE_CONTROLLER, else 127.0.0.1:7070)",
    )
    parser.add_argument("--id", type=agent_id, default=None, help="this agent's id, unique among connected agents (default: the hostname, lowercased)")
    parser.add_argument("--label", type=label, action="append", default=[], metavar="KEY=VALUE", help="a label for placement, e.g. zone=eu-1; repeatable")
    parser.add_argument("--capacity", type=integer(1, 1000), default=1, help="relative weight for sharding, 1 to 1000 (default: 1)")
    parser.add_argument("--max-concurrent", type=integer(0, 100_000), default=0, help="executions run at once; the rest wait on the controller (default: 0, no limit)")
    parser.add_argument("--handlers", default=os.path.join(HERE, "handlers.py"), metavar="PATH", help="a Python file whose HANDLERS dict maps handler names to functions (default: handlers.py beside this file)")
    parser.add_argument("--drain-grace", type=seconds, default=30.0, metavar="SECONDS", help="how long a drain lets running executions finish (default: 30)")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"], default="info")
    # argparse runs `type` on a string default too, so $SHARDLINE_CONTROLLER is checked as well.
    flags = parser.parse_args(argv)
    if flags.id is None:
        try:
            flags.id = agent_id(socket.gethostname().lower())
        except argparse.ArgumentTypeError as error:
            parser.error(f"argument --id: not given, and the hostname will not do: {error}")
    try:
        flags.handlers = load_handlers(flags.handlers)
    except ValueError as error:
        parser.error(f"argument --handlers: {error}")
    return flags


def load_handlers(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"expected a Python file, got {path!r}")
    spec = importlib.util.spec_from_file_location("shardline_handlers", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as error:  # noqa: BLE001  (whatever the module raised, say where)
        raise ValueError(f"{path} failed to load: {type(error).__name__}: {error}") from None
    handlers = getattr(module, "HANDLERS", None)
    if not isinstance(handlers, dict) or not handlers:
        raise ValueError(f"{path} must define HANDLERS, a non-empty dict of handler name to function")
    for name, function in handlers.items():
        if not isinstance(name, str) or not HANDLER_NAME.match(name):
            raise ValueError(f"{path}: handler name {name!r} is not 1-128 characters of letters, digits, '.', '_', ':' and '-'")
        if not callable(function):
            raise ValueError(f"{path}: HANDLERS[{name!r}] is not a function")
    return handlers


async def serve(agent: Agent) -> int:
    loop = asyncio.get_running_loop()
    signals_seen = 0

    def on_signal(name: str) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            agent.drain(name)
        else:
            agent.stop(f"second signal ({name})")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    await agent.run()
    if agent.refusal is not None:
        sys.stderr.write(f"agent.py: {agent.refusal}\n")
        return 4
    return 0 if agent.drained else 1


def main(argv: list[str]) -> int:
    flags = parse_flags(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=flags.log_level.upper(),
        format="%(asctime)s.%(msecs)03d %(levelname)s %(name)s: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
    )
    options = AgentOptions(
        controllers=flags.controller,
        agent_id=flags.id,
        handlers=flags.handlers,
        labels=dict(flags.label),
        capacity=flags.capacity,
        max_concurrent=flags.max_concurrent,
        drain_grace_s=flags.drain_grace,
    )
    log = logging.getLogger(flags.id)
    code = asyncio.run(serve(Agent(options, log)))
    log.info("exiting with code %d", code)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
