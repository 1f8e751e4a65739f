"""The ``router`` command: roles and tools. Wiring only; the work happens in the modules."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import REGISTRY, CollectorRegistry

from router import __version__
from router.config import SECRETS, ConfigError, Workspace, with_bootstrap
from router.workspace import load_workspace

logger = logging.getLogger("router")


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    SECRETS.install()
    # aiokafka logs every rebalance step at INFO; keep the router's own lines readable.
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


def _load(args: argparse.Namespace) -> Workspace:
    workspace = load_workspace(args.config)
    if getattr(args, "bootstrap", None):
        workspace = with_bootstrap(workspace, args.bootstrap)
    return workspace


def _add_common(parser: argparse.ArgumentParser, *, ops_port: int = 9300) -> None:
    parser.add_argument("--config", "-c", help="workspace YAML (default: $ROUTER_CONFIG)")
    parser.add_argument(
        "--bootstrap",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or the workspace file)",
    )
    parser.add_argument("--ops-host", default="127.0.0.1", help="address for /metrics and /healthz")
    parser.add_argument(
        "--ops-port", type=int, default=ops_port, help="port for /metrics and /healthz"
    )
    parser.add_argument("--log-level", default="info")
    parser.add_argument(
        "--shutdown-grace", type=float, default=30.0, help="seconds a clean stop may take"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description=__doc__)
    parser.add_argument("--version", action="version", version=f"router {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="everything in one process; starts an embedded broker if no Kafka is configured"
    )
    _add_common(run)
    run.add_argument("--gateway-host", default="127.0.0.1")
    run.add_argument("--gateway-port", type=int, default=8080)
    run.add_argument("--no-gateway", action="store_true", help="do not serve the HTTP Tracking API")
    run.add_argument(
        "--demo",
        action="store_true",
        help="also run a demo sink on 127.0.0.1:9400 that prints what it receives, "
        "and send a test event every few seconds",
    )

    process = commands.add_parser("process", help="the stream processor: events.raw -> dest.<id>")
    _add_common(process)

    deliver = commands.add_parser("deliver", help="delivery agents for some destinations")
    _add_common(deliver)
    deliver.add_argument(
        "--destination",
        "-d",
        action="append",
        default=[],
        help="destination id (repeatable; default all)",
    )

    gateway = commands.add_parser("gateway", help="the Segment-compatible HTTP Tracking API")
    _add_common(gateway)
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)

    ops = commands.add_parser(
        "ops", help="the operations console: debugger, Event Delivery, dead letters (API and page)"
    )
    _add_common(ops)

    from router.ops.arguments import add_dlq_arguments, add_replay_arguments

    replay = commands.add_parser(
        "replay", help="run the pipeline again for one destination over a time window"
    )
    add_replay_arguments(replay)

    dlq = commands.add_parser("dlq", help="list, show and redrive a destination's dead letters")
    add_dlq_arguments(dlq)

    from router.privacy.arguments import add_privacy_arguments

    privacy = commands.add_parser(
        "privacy", help="suppress, unsuppress and delete users (regulations), and their status"
    )
    add_privacy_arguments(privacy)

    check = commands.add_parser("check-config", help="validate a workspace file and exit")
    check.add_argument("file", nargs="?", help="workspace YAML (default: $ROUTER_CONFIG)")

    from router.plans.commands import add_plan_parser

    add_plan_parser(commands)

    send = commands.add_parser("send", help="send a test event")
    send.add_argument("--write-key", "-k", required=True)
    send.add_argument("--url", default="http://127.0.0.1:8080", help="gateway base URL")
    send.add_argument(
        "--kafka",
        metavar="BOOTSTRAP",
        help="write straight to events.raw on this Kafka instead of the gateway",
    )
    send.add_argument("--topic-prefix", default="", help="with --kafka: the workspace topic prefix")
    send.add_argument(
        "--type", default="track", choices=["track", "identify", "page", "screen", "group", "alias"]
    )
    send.add_argument("--event", default="Router Test Event")
    send.add_argument("--user-id", default="test-user")
    send.add_argument("--properties", default="{}", help="JSON object")
    send.add_argument("--count", type=int, default=1)

    from router import catalog_cli

    catalog_cli.add_parser(commands)

    from destinations.warehouse.cli import add_warehouse_parser

    add_warehouse_parser(commands)
    return parser


# ---------------------------------------------------------------- roles


def _roles_for(
    command: str, args: argparse.Namespace, workspace: Workspace, registry: CollectorRegistry
) -> list[Any]:
    roles: list[Any] = []
    if command == "run" and args.demo:
        from router.demo import DemoSink

        roles.append(DemoSink())
    if command in ("run", "process"):
        from router.processor import Processor

        roles.append(Processor(workspace, registry))
    if command in ("run", "deliver"):
        from router.delivery.agent import DeliveryAgent

        wanted = getattr(args, "destination", None) or [
            d.id for d in workspace.destinations if d.enabled
        ]
        unknown = [d for d in wanted if d not in {x.id for x in workspace.destinations}]
        if unknown:
            raise ConfigError([("--destination", f"unknown destination {d!r}") for d in unknown])
        if wanted:
            roles.append(DeliveryAgent(workspace, wanted, registry))
    if command == "gateway" or (command == "run" and not args.no_gateway):
        from router.gateway.server import Gateway

        host = args.host if command == "gateway" else args.gateway_host
        port = args.port if command == "gateway" else args.gateway_port
        limits = workspace.gateway
        roles.append(
            Gateway(
                workspace,
                registry,
                host=host,
                port=port,
                public_url=limits.public_url,
                rate_limit=limits.rate_limit,
                burst=limits.burst,
                read_timeout=limits.read_timeout,
                produce_timeout=limits.produce_timeout,
            )
        )
    if command in ("run", "ops"):
        from router.ops.console import Console
        from router.privacy.worker import RegulationWorker

        roles.append(Console(workspace, registry))
        roles.append(RegulationWorker(workspace))
    if command == "run" and args.demo:
        from router.demo import DemoTraffic

        write_key = workspace.sources[0].write_keys[0]
        roles.append(DemoTraffic(workspace, write_key))
    return roles


def _serve(command: str, args: argparse.Namespace) -> int:
    from router.app import RouterWorker, build_app
    from router.broker.embedded import EmbeddedBroker
    from router.ops.server import OpsServer

    workspace = _load(args)
    broker: EmbeddedBroker | None = None
    if not workspace.kafka.bootstrap_servers:
        if command != "run":
            raise ConfigError(
                [
                    (
                        "kafka.bootstrap_servers",
                        "not set: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS",
                    )
                ]
            )
        broker = EmbeddedBroker()
        broker.start()
        workspace = with_bootstrap(workspace, broker.bootstrap_servers)
        print(
            f"embedded Kafka-protocol broker (Tansu, in memory) on {broker.bootstrap_servers}",
            file=sys.stderr,
            flush=True,
        )
    try:
        roles = _roles_for(command, args, workspace, REGISTRY)
        from router.ops.console import Console

        console = next((role for role in roles if isinstance(role, Console)), None)
        ops = OpsServer(
            REGISTRY,
            roles,
            host=args.ops_host,
            port=args.ops_port,
            console=console,
            settings=workspace.ops,
        )
        suffix = "-".join(args.destination) if command == "deliver" and args.destination else ""
        app_id = f"{workspace.kafka.client_id}-{command}{'-' + suffix if suffix else ''}"
        app = build_app(app_id, workspace.kafka, roles, ops=ops)
        worker = RouterWorker(app, shutdown_grace=args.shutdown_grace, loglevel=args.log_level)
        worker.execute_from_commandline()
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if broker is not None:
            broker.stop()
    return 0


# ---------------------------------------------------------------- tools


def _check_config(args: argparse.Namespace) -> int:
    try:
        workspace = load_workspace(args.file)
    except ConfigError as exc:
        print(f"{exc.source or 'workspace'}: {len(exc.problems)} problem(s)", file=sys.stderr)
        for path, message in exc.problems:
            print(f"  {path}: {message}" if path else f"  {message}", file=sys.stderr)
        return 1
    print(
        f"ok: {len(workspace.sources)} source(s), {len(workspace.destinations)} destination(s), "
        f"{len(workspace.tracking_plans)} tracking plan(s)"
    )
    return 0


def _test_events(args: argparse.Namespace) -> list[dict[str, Any]]:
    properties = orjson.loads(args.properties)
    events: list[dict[str, Any]] = []
    for i in range(args.count):
        event: dict[str, Any] = {"type": args.type, "userId": args.user_id}
        if args.type == "track":
            event["event"] = args.event
            event["properties"] = {**properties, "sequence": i}
        elif args.type in ("identify", "group"):
            event["traits"] = properties
            if args.type == "group":
                event["groupId"] = "test-group"
        elif args.type in ("page", "screen"):
            event["name"] = args.event
            event["properties"] = properties
        elif args.type == "alias":
            event["previousId"] = "previous-test-user"
        events.append(event)
    return events


async def _send(args: argparse.Namespace) -> int:
    events = _test_events(args)
    if args.kafka:
        from router.broker.clients import BatchSender, OutRecord
        from router.broker.topics import Topics
        from router.config import KafkaSettings
        from router.spec import now, partition_key, stamp

        settings = KafkaSettings(bootstrap_servers=args.kafka, topic_prefix=args.topic_prefix)
        from router.broker.clients import make_producer

        producer = make_producer(settings, role="send")
        await producer.start()
        try:
            topic = Topics(args.topic_prefix).raw
            records = []
            for event in events:
                stamp(event, now())
                records.append(
                    OutRecord(
                        topic,
                        partition_key(event),
                        orjson.dumps(event),
                        (("write-key", args.write_key.encode()),),
                    )
                )
            await BatchSender(producer).send(records)
        finally:
            await producer.stop()
        print(f"wrote {len(events)} event(s) to {topic}")
        return 0

    import aiohttp

    async with aiohttp.ClientSession() as session:
        body = {"batch": events, "writeKey": args.write_key}
        async with session.post(f"{args.url.rstrip('/')}/v1/batch", json=body) as response:
            text = await response.text()
            print(f"{response.status} {text}")
            return 0 if response.status == 200 else 1


def _operate(args: argparse.Namespace) -> int:
    from router.ops.commands import CommandError, dlq_command, replay_command
    from router.privacy.commands import CommandError as PrivacyError
    from router.privacy.commands import privacy_command

    workspace = _load(args)
    if not workspace.kafka.bootstrap_servers:
        problem = "not set: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS"
        raise ConfigError([("kafka.bootstrap_servers", problem)])
    commands = {"replay": replay_command, "dlq": dlq_command, "privacy": privacy_command}
    try:
        return asyncio.run(commands[args.command](workspace, args))
    except (CommandError, PrivacyError) as exc:
        print(f"router {args.command}: {exc}", file=sys.stderr)
        return 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(getattr(args, "log_level", "info"))
    try:
        if args.command == "check-config":
            return _check_config(args)
        if args.command == "send":
            return asyncio.run(_send(args))
        if args.command == "plan":
            from router.plans.commands import run_plan_command

            return run_plan_command(args)
        if args.command == "destinations":
            from router import catalog_cli

            return catalog_cli.run(args, _load)
        if args.command in ("replay", "dlq", "privacy"):
            return _operate(args)
        if args.command == "warehouse":
            from destinations.warehouse.cli import run_warehouse

            return run_warehouse(args, _load(args))
        return _serve(args.command, args)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
