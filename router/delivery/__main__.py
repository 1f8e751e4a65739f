"""Run delivery agents in a process of their own: ``python -m router.delivery``.

    python -m router.delivery --config FILE --destination ID [--destination ID ...]
        [--bootstrap HOST:PORT] [--ops-port N] [--grace SECONDS]

Starts :class:`~router.delivery.agent.DeliveryAgent` and the ops server (``/metrics``,
``/healthz``, ``/readyz``); SIGTERM or SIGINT stops the agent within the grace period.
``router deliver`` wires the same pieces.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from router.config import SECRETS, ConfigError, with_bootstrap
from router.delivery.agent import DEFAULT_GRACE, DeliveryAgent
from router.ops.server import OpsServer
from router.workspace import load_workspace

logger = logging.getLogger("router.delivery")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m router.delivery", description="Run delivery agents for some destinations."
    )
    parser.add_argument("--config", required=True, help="workspace YAML file")
    parser.add_argument("--destination", action="append", required=True, help="destination id")
    parser.add_argument("--bootstrap", help="Kafka bootstrap servers (overrides the workspace)")
    parser.add_argument("--ops-host", default="127.0.0.1")
    parser.add_argument("--ops-port", type=int, default=9300)
    parser.add_argument("--grace", type=float, default=DEFAULT_GRACE, help="seconds for SIGTERM")
    parser.add_argument(
        "--session-timeout-ms",
        type=int,
        default=None,
        help="consumer group session timeout (how soon a killed member's partitions move)",
    )
    parser.add_argument("--commit-interval", type=float, default=1.0)
    parser.add_argument("--log-level", default="INFO")
    return parser


async def serve(agent: DeliveryAgent, registry: CollectorRegistry, *, host: str, port: int) -> None:
    """Run until SIGTERM/SIGINT, then stop the agent (bounded) and the ops server."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    ops = OpsServer(registry, [agent], host=host, port=port)
    await ops.start()
    try:
        await agent.start()
        ops.ready = True
        logger.info("delivery agent ready (ops on port %d)", ops.port)
        await stop.wait()
        logger.info("stopping delivery agent (grace %.0fs)", agent.grace)
        ops.ready = False
        await agent.stop()
    finally:
        await ops.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    SECRETS.install()
    try:
        workspace = load_workspace(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.bootstrap:
        workspace = with_bootstrap(workspace, args.bootstrap)
    if not workspace.kafka.bootstrap_servers:
        print("no Kafka bootstrap servers: pass --bootstrap", file=sys.stderr)
        return 2
    consumer_options: dict[str, object] = {}
    if args.session_timeout_ms:
        consumer_options["session_timeout_ms"] = args.session_timeout_ms
        consumer_options["rebalance_timeout_ms"] = max(3000, args.session_timeout_ms)
        consumer_options["heartbeat_interval_ms"] = max(100, args.session_timeout_ms // 5)
    registry = CollectorRegistry()
    try:
        agent = DeliveryAgent(
            workspace,
            args.destination,
            registry,
            grace=args.grace,
            commit_interval=args.commit_interval,
            consumer_options=consumer_options,
        )
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    asyncio.run(serve(agent, registry, host=args.ops_host, port=args.ops_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
