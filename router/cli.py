"""The ``router`` command: roles and tools. Wiring only; the work happens in the modules.

Every command reports a failure as one line on stderr, ``router <command>: <what went
wrong>`` (a workspace with several mistakes gets one line per mistake), and exits 2 for a
mistake in the arguments or the workspace, 1 for anything else. ``--debug`` adds the
traceback. Serving commands check that their ports are free before anything starts.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import os
import socket
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import orjson
from prometheus_client import REGISTRY, CollectorRegistry

from router import __version__, logs
from router.config import ConfigError, Workspace, with_bootstrap
from router.workspace import load_workspace

logger = logging.getLogger("router")

#: Consumer-group session on the embedded broker, unless the workspace or --session-timeout
#: sets one. Tansu holds every JoinGroup for half the session and a follower's SyncGroup for
#: up to 80% of it, in whole seconds, so after a crash a new member waits about
#: join + sync + join: 7 s with 3 s, 4 s with 2 s. Heartbeats go every 2/3 s.
EMBEDDED_SESSION_TIMEOUT = 2.0
SEND_TIMEOUT = 30.0


class CommandError(Exception):
    """A failure to report as one line (``exit_code`` 1: could not run, 2: bad input)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------- arguments


def _output_options() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--log-level",
        type=str.lower,
        choices=logs.LEVELS,
        default=logs.default_level(),
        help=f"default: ${logs.LEVEL_ENV} or info",
    )
    parent.add_argument(
        "--log-format",
        choices=logs.FORMATS,
        default=logs.default_format(),
        help=f"text lines, or one JSON object per line (default: ${logs.FORMAT_ENV} or text)",
    )
    parent.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (and debug logs)"
    )
    return parent


def _serving_options(*, ops_port: int = 9300) -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("--config", "-c", help="workspace YAML (default: $ROUTER_CONFIG)")
    parent.add_argument(
        "--bootstrap",
        help="Kafka bootstrap servers (default: $KAFKA_BOOTSTRAP_SERVERS or the workspace file)",
    )
    parent.add_argument("--ops-host", default="127.0.0.1", help="address for /metrics and /healthz")
    parent.add_argument(
        "--ops-port", type=int, default=ops_port, help="port for /metrics, /healthz and /readyz"
    )
    parent.add_argument(
        "--shutdown-grace", type=float, default=30.0, help="seconds a clean stop may take"
    )
    parent.add_argument(
        "--session-timeout",
        type=float,
        help="seconds before a dead consumer's partitions move to another "
        "(default: kafka.session_timeout, 6; 2 on the embedded broker)",
    )
    parent.add_argument(
        "--state-dir",
        default=os.environ.get("ROUTER_STATE_DIR"),
        help="overrides processor.state_dir (default: $ROUTER_STATE_DIR or the workspace file)",
    )
    return parent


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="router", description=__doc__)
    parser.add_argument("--version", action="version", version=f"router {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    output = _output_options()
    serving = _serving_options()

    run = commands.add_parser(
        "run",
        parents=[serving, output],
        help="everything in one process; starts an embedded broker if no Kafka is configured",
    )
    run.add_argument("--gateway-host", default="127.0.0.1")
    run.add_argument("--gateway-port", type=int, default=8080)
    run.add_argument("--no-gateway", action="store_true", help="do not serve the HTTP Tracking API")
    run.add_argument(
        "--demo",
        action="store_true",
        help="also run a demo sink on 127.0.0.1:9400 that prints what it receives, "
        "and send a test event every few seconds",
    )

    commands.add_parser(
        "process",
        parents=[serving, output],
        help="the stream processor: events.raw -> dest.<id>",
    )

    deliver = commands.add_parser(
        "deliver", parents=[serving, output], help="delivery agents for some destinations"
    )
    deliver.add_argument(
        "--destination",
        "-d",
        action="append",
        default=[],
        help="destination id (repeatable; default all)",
    )
    deliver.add_argument(
        "--commit-interval",
        type=float,
        default=1.0,
        help="seconds between offset commits (what a crash may redeliver)",
    )

    gateway = commands.add_parser(
        "gateway", parents=[serving, output], help="the Segment-compatible HTTP Tracking API"
    )
    gateway.add_argument("--host", default="127.0.0.1")
    gateway.add_argument("--port", type=int, default=8080)

    sink = commands.add_parser(
        "demo-sink",
        parents=[output],
        help="a webhook sink that prints every event it receives (for demos)",
    )
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=9400)
    sink.add_argument("--ops-host", default="127.0.0.1")
    sink.add_argument("--ops-port", type=int, default=9300)
    sink.add_argument("--shutdown-grace", type=float, default=5.0)
    sink.add_argument(
        "--state-dir",
        default=os.environ.get("ROUTER_STATE_DIR", "./state"),
        help="where the process may write (default: $ROUTER_STATE_DIR or ./state)",
    )

    commands.add_parser(
        "ops",
        parents=[serving, output],
        help="the operations console: debugger, Event Delivery, dead letters (API and page)",
    )

    from router.ops.arguments import add_dlq_arguments, add_replay_arguments

    replay = commands.add_parser(
        "replay",
        parents=[output],
        help="run the pipeline again for one destination over a time window",
    )
    add_replay_arguments(replay)

    dlq = commands.add_parser(
        "dlq", parents=[output], help="list, show and redrive a destination's dead letters"
    )
    add_dlq_arguments(dlq)

    from router.privacy.arguments import add_privacy_arguments

    privacy = commands.add_parser(
        "privacy",
        parents=[output],
        help="suppress, unsuppress and delete users (regulations), and their status",
    )
    add_privacy_arguments(privacy)

    check = commands.add_parser(
        "check-config", parents=[output], help="validate a workspace file and exit"
    )
    check.add_argument("file", nargs="?", help="workspace YAML (default: $ROUTER_CONFIG)")

    from router.plans.commands import add_plan_parser

    add_plan_parser(commands)

    send = commands.add_parser("send", parents=[output], help="send a test event")
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


def _load(args: argparse.Namespace) -> Workspace:
    """The workspace with the command line's overrides (tools have only some of them)."""
    workspace = load_workspace(args.config)
    bootstrap = getattr(args, "bootstrap", None)
    if bootstrap:
        workspace = with_bootstrap(workspace, bootstrap)
    session_timeout = getattr(args, "session_timeout", None)
    if session_timeout is not None:
        if not 1.0 <= session_timeout <= 300.0:
            raise CommandError("--session-timeout must be between 1 and 300 seconds", 2)
        kafka = workspace.kafka.model_copy(update={"session_timeout": session_timeout})
        workspace = workspace.model_copy(update={"kafka": kafka})
    # Tools have no --state-dir; they read the same directory the roles write.
    state_dir = getattr(args, "state_dir", None) or os.environ.get("ROUTER_STATE_DIR")
    if state_dir:
        processor = workspace.processor.model_copy(update={"state_dir": state_dir})
        workspace = workspace.model_copy(update={"processor": processor})
    return workspace


def _stages_for(
    command: str,
    args: argparse.Namespace,
    workspace: Workspace,
    registry: CollectorRegistry,
    *,
    role_grace: float,
) -> list[list[Any]]:
    """The roles of ``command``, in stages: local sinks, then processing and delivery, then
    intake. They start together; they stop in reverse stage order."""
    sinks: list[Any] = []
    work: list[Any] = []
    intake: list[Any] = []
    if command == "run" and args.demo:
        from router.demo import DemoSink

        sinks.append(DemoSink())
    if command in ("run", "process"):
        from router.processor import Processor

        work.append(Processor(workspace, registry, stop_grace=role_grace))
    if command in ("run", "deliver"):
        from router.delivery.agent import DeliveryAgent

        wanted = getattr(args, "destination", None) or [
            d.id for d in workspace.destinations if d.enabled
        ]
        unknown = [d for d in wanted if d not in {x.id for x in workspace.destinations}]
        if unknown:
            raise ConfigError([("--destination", f"unknown destination {d!r}") for d in unknown])
        if wanted:
            work.append(
                DeliveryAgent(
                    workspace,
                    wanted,
                    registry,
                    grace=role_grace,
                    commit_interval=getattr(args, "commit_interval", 1.0),
                )
            )
    if command == "gateway" or (command == "run" and not args.no_gateway):
        from router.gateway.server import Gateway

        host = args.host if command == "gateway" else args.gateway_host
        port = args.port if command == "gateway" else args.gateway_port
        limits = workspace.gateway
        intake.append(
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
                drain_timeout=min(10.0, role_grace),
            )
        )
    if command in ("run", "ops"):
        from router.ops.console import Console
        from router.privacy.worker import RegulationWorker

        work.append(Console(workspace, registry))
        work.append(RegulationWorker(workspace))
    if command == "run" and args.demo:
        from router.demo import DemoTraffic

        write_key = workspace.sources[0].write_keys[0]
        intake.append(DemoTraffic(workspace, write_key))
    return [sinks, work, intake]


def _listeners(command: str, args: argparse.Namespace) -> list[tuple[str, str, int]]:
    """``(option, host, port)`` of every socket the command will listen on."""
    from router.demo import DEMO_SINK_PORT

    found = [("--ops-port", args.ops_host, args.ops_port)]
    if command in ("gateway", "demo-sink"):
        found.append(("--port", args.host, args.port))
    elif command == "run":
        if not args.no_gateway:
            found.append(("--gateway-port", args.gateway_host, args.gateway_port))
        if args.demo:
            found.append(("the demo sink's port", "127.0.0.1", DEMO_SINK_PORT))
    return found


def check_ports(listeners: Sequence[tuple[str, str, int]]) -> None:
    """Raise :class:`CommandError` for the first port that cannot be listened on.

    Bound with SO_REUSEADDR, as aiohttp binds: a port that is merely in TIME_WAIT is free.
    """
    seen: dict[tuple[str, int], str] = {}
    for option, host, port in listeners:
        if port == 0:
            continue
        if (host, port) in seen:
            raise CommandError(f"{option} and {seen[(host, port)]} are both port {port}", 2)
        seen[(host, port)] = option
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise CommandError(f"cannot listen on {host} ({option}): {exc.strerror}", 2) from None
        family, kind, proto, _name, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                reason = "is already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise CommandError(f"port {port} on {host} ({option}) {reason}") from None


def _serve(command: str, args: argparse.Namespace) -> int:
    from router.app import DRAIN_SHARE, RoleHost, RouterWorker, build_app, faust_datadir
    from router.broker.embedded import EmbeddedBroker
    from router.drain import Drain
    from router.ops.server import OpsServer

    workspace = _load(args)
    embedded = not workspace.kafka.bootstrap_servers
    if embedded and command != "run":
        raise ConfigError(
            [
                (
                    "kafka.bootstrap_servers",
                    "not set: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS",
                )
            ]
        )
    check_ports(_listeners(command, args))
    suffix = "-".join(args.destination) if command == "deliver" and args.destination else ""
    app_id = f"{workspace.kafka.client_id}-{command}{'-' + suffix if suffix else ''}"
    datadir = _datadir(faust_datadir, workspace.processor.state_dir, app_id)
    grace = args.shutdown_grace
    # With the embedded broker, most of the grace goes to draining it (router.drain).
    role_grace = max(1.0, grace * (1 - DRAIN_SHARE) - 1 if embedded else grace - 2)
    broker: EmbeddedBroker | None = None
    if embedded:
        broker = EmbeddedBroker()
        broker.start()
        workspace = with_bootstrap(workspace, broker.bootstrap_servers)
        if "session_timeout" not in workspace.kafka.model_fields_set:
            kafka = workspace.kafka.model_copy(update={"session_timeout": EMBEDDED_SESSION_TIMEOUT})
            workspace = workspace.model_copy(update={"kafka": kafka})
        logger.info(
            "embedded Kafka-protocol broker (Tansu, in memory) on %s", broker.bootstrap_servers
        )
    try:
        stages = _stages_for(command, args, workspace, REGISTRY, role_grace=role_grace)
        roles = [role for stage in stages for role in stage]
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
        host = RoleHost(
            stages, ops=ops, drain=Drain(workspace.kafka, roles) if embedded else None, grace=grace
        )
        app = build_app(app_id, workspace.kafka.bootstrap_servers, datadir=datadir)
        return _host(RouterWorker(app, host, shutdown_grace=grace, loglevel=args.log_level))
    finally:
        if broker is not None:
            broker.stop()


def _demo_sink(args: argparse.Namespace) -> int:
    from router.app import RoleHost, RouterWorker, build_app, faust_datadir
    from router.demo import DemoSink
    from router.ops.server import OpsServer

    check_ports(_listeners("demo-sink", args))
    datadir = _datadir(faust_datadir, args.state_dir, "event-router-demo-sink")
    sink = DemoSink(port=args.port, host=args.host)
    ops = OpsServer(REGISTRY, [sink], host=args.ops_host, port=args.ops_port)
    host = RoleHost([[sink]], ops=ops, grace=args.shutdown_grace)
    app = build_app("event-router-demo-sink", None, datadir=datadir)
    return _host(RouterWorker(app, host, shutdown_grace=args.shutdown_grace, loglevel="info"))


def _datadir(make: Any, state_dir: str, app_id: str) -> Any:
    try:
        return make(state_dir, app_id)
    except OSError as exc:
        raise CommandError(
            f"cannot create a data directory under {state_dir}: {exc.strerror or exc} "
            "(set --state-dir, $ROUTER_STATE_DIR or $APP_DATADIR to a writable directory)"
        ) from None


def _host(worker: Any) -> int:
    code = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:
        code = int(exc.code or 0)
    return int(worker.exit_code or code)


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
    try:
        properties = orjson.loads(args.properties)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"--properties is not valid JSON: {exc}", 2) from None
    if not isinstance(properties, dict):
        raise CommandError("--properties must be a JSON object, like '{\"total\": 42}'", 2)
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


async def _send_kafka(args: argparse.Namespace, events: list[dict[str, Any]]) -> int:
    from aiokafka.errors import KafkaConnectionError, KafkaError

    from router.broker.clients import BatchSender, OutRecord, make_producer
    from router.broker.topics import Topics
    from router.config import KafkaSettings
    from router.spec import now, partition_key, stamp

    settings = KafkaSettings(bootstrap_servers=args.kafka, topic_prefix=args.topic_prefix)
    topic = Topics(args.topic_prefix).raw
    producer = make_producer(settings, role="send", request_timeout_ms=int(SEND_TIMEOUT * 1000))
    # aiokafka logs every failed connection attempt at ERROR; the one line below says it.
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if args.debug else logging.CRITICAL)
    try:
        async with asyncio.timeout(SEND_TIMEOUT):
            try:
                await producer.start()
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
    except KafkaConnectionError:
        raise CommandError(f"cannot connect to Kafka at {args.kafka}") from None
    except KafkaError as exc:
        raise CommandError(f"cannot write to {topic} on Kafka at {args.kafka}: {exc}") from None
    except TimeoutError:
        raise CommandError(
            f"Kafka at {args.kafka} did not acknowledge within {SEND_TIMEOUT:.0f} s "
            f"(is it running, and does {topic} exist?)"
        ) from None
    print(f"wrote {len(events)} event(s) to {topic}")
    return 0


async def _send(args: argparse.Namespace) -> int:
    events = _test_events(args)
    if args.kafka:
        return await _send_kafka(args, events)

    import aiohttp

    url = f"{args.url.rstrip('/')}/v1/batch"
    body = {"batch": events, "writeKey": args.write_key}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=SEND_TIMEOUT)) as session,
            session.post(url, json=body) as response,
        ):
            text = " ".join((await response.text()).split())
            status = response.status
    except aiohttp.InvalidURL:
        raise CommandError(f"--url {args.url!r} is not an http(s) URL", 2) from None
    except aiohttp.ClientConnectorError as exc:
        code = exc.os_error.errno
        reason = os.strerror(code).lower() if code else logs.one_line(exc.os_error)
        raise CommandError(f"cannot reach the gateway at {args.url}: {reason}") from None
    except aiohttp.ClientError as exc:
        raise CommandError(f"the gateway at {args.url} failed: {exc}") from None
    except TimeoutError:
        raise CommandError(
            f"the gateway at {args.url} did not answer within {SEND_TIMEOUT:.0f} s"
        ) from None
    if status == 200:
        print(f"{status} {text}")
        return 0
    print(f"router send: the gateway answered {status} {text}", file=sys.stderr)
    return 1


# ---------------------------------------------------------------- entry point


def _run(args: argparse.Namespace) -> int:
    if args.command == "check-config":
        return _check_config(args)
    if args.command == "send":
        return asyncio.run(_send(args))
    if args.command == "demo-sink":
        return _demo_sink(args)
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


def _operate(args: argparse.Namespace) -> int:
    from router.ops.commands import CommandError as OpsCommandError
    from router.ops.commands import dlq_command, replay_command
    from router.privacy.commands import CommandError as PrivacyCommandError
    from router.privacy.commands import privacy_command

    workspace = _load(args)
    if not workspace.kafka.bootstrap_servers:
        problem = "not set: pass --bootstrap or set KAFKA_BOOTSTRAP_SERVERS"
        raise ConfigError([("kafka.bootstrap_servers", problem)])
    commands = {"replay": replay_command, "dlq": dlq_command, "privacy": privacy_command}
    try:
        return asyncio.run(commands[args.command](workspace, args))
    except (OpsCommandError, PrivacyCommandError) as exc:
        raise CommandError(str(exc)) from None


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Tools whose parsers other modules build may lack some of the output options.
    args.debug = getattr(args, "debug", False)
    level = "debug" if args.debug else getattr(args, "log_level", None) or logs.default_level()
    logs.configure(level, getattr(args, "log_format", None) or logs.default_format())
    prefix = f"router {args.command}"
    try:
        return _run(args)
    except ConfigError as exc:
        _trace(args)
        where = f"{exc.source}: " if exc.source else ""
        if len(exc.problems) == 1:
            path, message = exc.problems[0]
            print(f"{prefix}: {where}{path + ': ' if path else ''}{message}", file=sys.stderr)
        else:
            print(f"{prefix}: {where}{len(exc.problems)} problems", file=sys.stderr)
            for path, message in exc.problems:
                print(f"  {path}: {message}" if path else f"  {message}", file=sys.stderr)
        return 2
    except CommandError as exc:
        _trace(args)
        print(f"{prefix}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"{prefix}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 (the last resort: one line, not a traceback)
        # A failure nobody anticipated: still one line (the traceback with --debug).
        _trace(args)
        print(f"{prefix}: {type(exc).__name__}: {logs.one_line(exc)}", file=sys.stderr)
        return 1


def _trace(args: argparse.Namespace) -> None:
    if args.debug:
        traceback.print_exc(file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
