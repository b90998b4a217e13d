"""CLI commands that talk to Kafka: worker, produce, tail, topics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import sys
from collections.abc import Iterator
from typing import Any

import orjson

from app.cli.args import positive as _positive
from app.settings import Settings


def cmd_worker(args: argparse.Namespace) -> int:
    from faust import Worker

    from app.serving import limits
    from app.stream.faust_app import create_app

    settings = Settings.from_env()
    settings.check_serving()
    limits.install(settings.web_header_timeout, settings.web_max_connections)
    asyncio.run(_preflight(settings))
    if settings.loop == "uvloop":
        import uvloop

        uvloop.install()  # before the Worker creates its loop
    app, _ = create_app(settings)
    from app.logs import guard_handlers, logging_config

    class GuardedWorker(Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            guard_handlers(logger)  # one line per record, quiet outages (app.logs.LogGuard)

    worker = GuardedWorker(app, loglevel=settings.log_level.upper(), logfile=None,
                    redirect_stdouts=False, quiet=True,
                    logging_config=logging_config(settings.log_format, settings.log_level))
    # No terminal spinner: at level WARNING and above it sets the root logger to DEBUG, so
    # every debug() call in faust/aiokafka builds a log record (measured: 7% of the CPU)
    worker.spinner = None
    logging.getLogger("loyalty").setLevel(settings.log_level.upper())
    worker.execute_from_commandline()
    return 0


async def _preflight(settings: Settings) -> None:
    """Kafka (topics created) and Redis answer, or one line and exit 2 (app.cli.main)."""
    from app.projection.connect import wait_for_redis
    from app.wire.kafka_io import ensure_topics

    await wait_for_redis(settings.redis_url, settings.connect_timeout)
    await ensure_topics(settings)


def cmd_lookup(args: argparse.Namespace) -> int:
    """The POS lookup server (app.lookup.server) until SIGINT/SIGTERM."""
    import signal

    import uvloop

    from app.logs import guard_handlers, logging_config
    from app.lookup.server import LookupServer
    from app.lookup.store import open_reader
    from app.projection.store import Days, namespace
    from app.stream.faust_app import build_engine

    settings = Settings.from_env()
    settings.check_serving()
    config = logging_config(settings.log_format, settings.log_level)
    if config is None:
        logging.basicConfig(level=settings.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    else:
        logging.config.dictConfig(config)
    guard_handlers()
    engine = build_engine(settings)
    dims = [d.id for _, d in engine.dims]
    port = settings.lookup_port if args.port is None else args.port
    log = logging.getLogger("loyalty.lookup")

    async def serve() -> None:
        from app.projection.connect import wait_for_redis

        await wait_for_redis(settings.redis_url, settings.connect_timeout)
        reader = open_reader(settings.redis_url, namespace(settings.app_id))
        server = LookupServer(reader, dims, Days(settings.timezone), settings.clock_fn(),
                              settings.api_token, cache_size=settings.lookup_cache,
                              invalidations_url=settings.redis_url,
                              header_timeout=settings.lookup_header_timeout,
                              max_connections=settings.lookup_max_connections)
        await server.start(settings.web_host, port, reuse_port=args.reuse_port)
        log.info("lookup server on http://%s:%d (dimensions: %s)", settings.web_host,
                 server.port, ", ".join(dims))
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        await server.close()

    uvloop.run(serve())
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from app.serving import limits
    from app.wire.kafka_io import ensure_topics, service_topics

    settings = Settings.from_env()
    settings.check_serving()
    limits.install(settings.web_header_timeout, settings.web_max_connections)
    asyncio.run(ensure_topics(settings))
    print("\n".join(service_topics(settings)))
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from app.batch.simulate import DEFAULT_END, SimConfig, generate, profiles
    from app.wire.kafka_io import ensure_topics, produce

    settings = Settings.from_env()
    kind = "communications" if args.communications else "profiles" if args.profiles else "receipts"
    topic = args.topic or {"communications": settings.topic_communications,
                           "profiles": settings.topic_profiles}.get(kind, settings.topic_receipts)
    lines: Any
    if args.live:
        from datetime import UTC, datetime

        from app.batch.simulate import live

        cfg = SimConfig(clients=args.clients, seed=args.seed)
        lines = live(cfg, args.duration, lambda: datetime.now(UTC))
        if not args.rate:
            raise SystemExit("--live needs --rate")
    elif args.input or args.file:
        lines = _history(args, kind)
    else:
        end = args.end if args.end is not None else DEFAULT_END
        cfg = SimConfig(clients=args.clients, days=args.days, seed=args.seed, end=end)
        if kind == "communications":
            from app.batch.simulate_comm import communications

            lines = communications(cfg)
        else:
            lines = profiles(cfg) if args.profiles else generate(cfg)
    asyncio.run(ensure_topics(settings))
    n, seconds = asyncio.run(produce(settings, topic, lines, rate=args.rate))
    print(orjson.dumps({"topic": topic, "messages": n, "seconds": round(seconds, 3),
                        "per_second": round(n / seconds) if seconds else None}).decode(),
          file=sys.stderr)
    return 0


def _history(args: argparse.Namespace, kind: str) -> Iterator[bytes]:
    """The records of a history file, in event-time order (``--order time``, the order
    ``loyalty replay`` applies them in) or as they come; with a progress bar (total, ETA).
    Lines the contract rejects are sent first, unchanged: the worker puts them in the DLQ."""
    from tqdm import tqdm

    from app.batch.inputs import parse_columns, records
    from app.batch.order import COMMUNICATION, NO_TIME, PROFILE, RECEIPT, ExternalSort, sort_key
    from app.settings import earliest_epoch
    from rules import RejectedInput, loads, parse_profile, parse_receipt
    from rules.calendar import to_epoch
    from rules.inputs.communications import parse_communication

    path = args.file or args.input
    rows = records(path, kind, args.format, parse_columns(args.columns))
    show = sys.stderr.isatty() and not args.quiet
    if args.order == "input":
        yield from (raw for _, raw in tqdm(rows, unit=" msgs", file=sys.stderr, disable=not show))
        return
    earliest = earliest_epoch(args.earliest)
    sorter = ExternalSort(args.sort_memory * 1024 * 1024)
    flag = {"profiles": PROFILE, "communications": COMMUNICATION}.get(kind, RECEIPT)
    for line_no, raw in rows:
        try:
            if kind == "profiles":
                updated = parse_profile(loads(raw), None, earliest).updated_at
                at = NO_TIME if updated is None else to_epoch(updated)
            elif kind == "communications":
                at = parse_communication(loads(raw), None, earliest).at
            else:
                at = parse_receipt(loads(raw), None, earliest).at
        except RejectedInput:
            at = NO_TIME - 1
        sorter.add(sort_key(at, flag, raw), line_no, raw)
    with tqdm(total=sorter.count, unit=" msgs", file=sys.stderr, disable=not show) as bar:
        for _, _, raw in sorter:
            yield raw
            bar.update()


def cmd_tail(args: argparse.Namespace) -> int:
    from app.wire.kafka_io import tail

    settings = Settings.from_env()
    topic = args.topic or (settings.topic_dlq if args.dlq else settings.topic_changes)
    with_headers = args.headers or args.dlq

    async def run() -> None:
        async for record in tail(settings, topic, idle_timeout=args.idle, max_messages=args.max):
            value = record.value or b""
            if with_headers:
                value = orjson.dumps({"headers": {k: v.decode("utf-8", "replace") for k, v in record.headers or ()},
                                      "value": value.decode("utf-8", "replace"), "partition": record.partition,
                                      "offset": record.offset})
            sys.stdout.buffer.write(value + b"\n")
        sys.stdout.flush()

    asyncio.run(run())
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from collections import Counter

    from app.wire.kafka_io import tail

    settings = Settings.from_env()
    latest: dict[tuple[str, str], str] = {}
    causes: Counter[str] = Counter()

    async def run() -> None:
        async for record in tail(settings, settings.topic_changes, idle_timeout=args.idle):
            event = orjson.loads(record.value)
            data = event["data"]
            latest[(data["client_id"], data["dimension"])] = data["to"]
            causes[data["cause"]] += 1

    asyncio.run(run())
    sizes: Counter[tuple[str, str]] = Counter((dim, seg) for (_, dim), seg in latest.items())
    print(f"segment changes: {sum(causes.values())} ({', '.join(f'{k}: {v}' for k, v in sorted(causes.items()))})")
    current = None
    for (dim, seg), count in sorted(sizes.items()):
        if dim != current:
            print(f"{dim}:")
            current = dim
        print(f"  {seg:22} {count:7d}")
    return 0


def cmd_rebuild(args: argparse.Namespace) -> int:
    from agents.projector import rebuild
    from app.stream.faust_app import build_engine

    settings = Settings.from_env()
    asyncio.run(rebuild(settings, build_engine(settings),
                        say=lambda s: print(f"projection rebuild: {s}", file=sys.stderr)))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """The effective settings (environment, defaults), validated, secrets masked."""
    from app.settings import masked

    values = masked(Settings.from_env())
    if args.json:
        print(orjson.dumps(values, option=orjson.OPT_INDENT_2).decode())
    else:
        for name, value in values.items():
            print(f"{name}={value}")
    return 0


def _port(text: str) -> int:
    n = _positive(text)
    if n > 65535:
        raise argparse.ArgumentTypeError(f"a TCP port (1-65535), got {n}")
    return n


def register(sub: Any) -> None:
    from app.cli.args import instant as _instant

    w = sub.add_parser("worker", help="run a Faust worker (settings from the environment)")
    w.set_defaults(fn=cmd_worker)
    lk = sub.add_parser("lookup", help="run the POS lookup server (GET /clients/{id}, Redis only)")
    lk.add_argument("--port", type=_port, default=None, help="default: LOYALTY_LOOKUP_PORT (6068)")
    lk.add_argument("--reuse-port", action="store_true",
                    help="SO_REUSEPORT: several lookup processes share the port")
    lk.set_defaults(fn=cmd_lookup)
    t = sub.add_parser("topics", help="create the service's topics")
    t.set_defaults(fn=cmd_topics)
    p = sub.add_parser("produce", help="send receipts (a file or the simulator) to Kafka")
    p.add_argument("file", nargs="?", help="a history file: .jsonl, .csv or .parquet, optionally .gz "
                   "(default: the simulator)")
    p.add_argument("--input", help="the same as FILE ('-': JSON Lines on stdin)")
    p.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="default: from the extension")
    p.add_argument("--columns", help="CSV/Parquet column names: NAME=SOURCE,...")
    p.add_argument("--order", choices=("time", "input"), default="time",
                   help="send in event-time order (default, as loyalty replay applies them) or as read")
    p.add_argument("--earliest", default=os.environ.get("LOYALTY_EARLIEST_EVENT") or "1970-01-01T00:00:00Z",
                   help="earliest event time (LOYALTY_EARLIEST_EVENT); older lines are sent first, to the DLQ")
    p.add_argument("--sort-memory", type=_positive, default=256, metavar="MIB",
                   help="memory for the sort; beyond it, sorted runs go to temporary files")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--profiles", action="store_true", help="send profiles instead of receipts")
    p.add_argument("--communications", action="store_true",
                   help="send communication events instead of receipts (FILE, --input or the simulator)")
    p.add_argument("--topic", help="default: LOYALTY_TOPIC_RECEIPTS (LOYALTY_TOPIC_PROFILES with "
                   "--profiles, LOYALTY_TOPIC_COMMUNICATIONS with --communications)")
    p.add_argument("--rate", type=float, default=0.0, help="messages per second (0: max)")
    p.add_argument("--clients", type=_positive, default=1000, help="simulator: clients")
    p.add_argument("--days", type=_positive, default=90, help="simulator: days of history")
    p.add_argument("--seed", type=int, default=1, help="simulator: random seed")
    p.add_argument("--end", type=_instant, default=None, help="simulator: end of the history ('now' allowed)")
    p.add_argument("--live", action="store_true", help="receipts stamped now, at --rate, for --duration")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of --live traffic")
    p.set_defaults(fn=cmd_produce)
    sm = sub.add_parser("summary", help="segment sizes and change counts from the change topic")
    sm.add_argument("--idle", type=float, default=3.0, help="stop after this many idle seconds")
    sm.set_defaults(fn=cmd_summary)
    tl = sub.add_parser("tail", help="print messages of a topic (default: segment changes)")
    tl.add_argument("--topic", help="default: LOYALTY_TOPIC_CHANGES")
    tl.add_argument("--dlq", action="store_true",
                    help="the DLQ (LOYALTY_TOPIC_DLQ), one JSON line per message with its reason headers")
    tl.add_argument("--headers", action="store_true",
                    help="print {\"headers\": {...}, \"value\": ...} per message (implied by --dlq)")
    tl.add_argument("--idle", type=float, default=5.0, help="stop after this many idle seconds")
    tl.add_argument("--max", type=_positive, default=None, help="stop after this many messages")
    tl.set_defaults(fn=cmd_tail)
    pr = sub.add_parser("projection", help="the Redis projection of segments")
    prs = pr.add_subparsers(dest="projection_command", required=True)
    rb = prs.add_parser("rebuild", help="rebuild the projection from Kafka (changes topic "
                                        "and clients changelog) into a new generation")
    rb.set_defaults(fn=cmd_rebuild)
    cf = sub.add_parser("config", help="print the effective settings (secrets masked) or the first invalid one")
    cf.add_argument("--json", action="store_true", help="one JSON object instead of NAME=value lines")
    cf.set_defaults(fn=cmd_config)
