"""The ``loyalty`` command (also ``python -m app``)."""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import sys
import time
from collections.abc import Iterator
from typing import IO, Any

import orjson

from app.batch.engine import build_engine
from app.cli.args import Parser, zone
from app.cli.args import instant as _instant
from app.cli.args import positive as _positive
from app.errors import AppError
from rules import Engine, LoyaltyError, RuleSetError, load_ruleset, preset_names


@contextlib.contextmanager
def _open_out(path: str | None) -> Iterator[IO[bytes] | None]:
    if path is None:
        yield None
    elif path == "-":
        yield sys.stdout.buffer
    else:
        with open(path, "wb") as fh:
            yield fh


@contextlib.contextmanager
def _open_in(path: str) -> Iterator[IO[bytes]]:
    if path == "-":
        yield sys.stdin.buffer
    else:
        with open(path, "rb") as fh:
            yield fh


def _earliest(args: argparse.Namespace) -> int:
    from app.settings import earliest_epoch

    try:
        return earliest_epoch(args.earliest)
    except ValueError as exc:
        raise SystemExit(f"loyalty {args.command}: --earliest: {exc}") from None


def _primed(lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
    """``lines`` with its first item read now: a missing file or column fails before any work."""
    first = next(lines, None)
    return lines if first is None else itertools.chain([first], lines)


def _replay_inputs(args: argparse.Namespace) -> list[tuple[str, Iterator[tuple[int, bytes]]]]:
    from app.batch.inputs import parse_columns, records

    columns = parse_columns(args.columns)
    inputs = []
    if args.profiles:
        inputs.append(("profiles", _primed(records(args.profiles, "profiles", args.format, columns))))
    if args.communications:
        inputs.append(("communications", _primed(records(args.communications, "communications",
                                                         args.format, columns))))
    inputs.append(("receipts", _primed(records(args.input, "receipts", args.format, columns))))
    return inputs


def _writer(out: Any) -> Any:
    def write(row: dict[str, Any]) -> None:
        out.write(orjson.dumps(row) + b"\n")

    return write


def cmd_replay(args: argparse.Namespace) -> int:
    from app.batch.replay import Replay, progress, time_order, write_jsonl

    engine = build_engine(args.rules, args.param, args.tz)
    if engine.spec.stats and args.jobs > 1:
        raise SystemExit("loyalty replay: rules that read the population (population.* or a predictive "
                         "metric such as p_alive) run in one process: drop --jobs")
    earliest = _earliest(args)
    inputs = _replay_inputs(args)
    show = sys.stderr.isatty() and not args.quiet
    inputs[-1] = ("receipts", iter(progress(inputs[-1][1], None, show)))
    memory = args.sort_memory * 1024 * 1024
    started = time.perf_counter()
    with _open_out(args.changes_out) as changes, _open_out(args.rejects_out) as rejects, \
            _open_out(args.segments_out) as segments, _open_out(args.actions_out) as actions, \
            _open_out(args.facts_out) as facts:
        from app.batch.replay_scenarios import from_args as scenario_feed

        feed = scenario_feed(args, engine, actions)  # --scenarios (None: none)
        def on_change(event: dict[str, Any]) -> None:
            if changes is not None:
                changes.write(orjson.dumps(event) + b"\n")

        def on_reject(row: dict[str, Any]) -> None:
            if rejects is not None:
                rejects.write(orjson.dumps(row) + b"\n")

        if args.jobs > 1 and facts is not None:
            raise SystemExit("loyalty replay: --facts-out runs in one process: drop --jobs")
        if args.jobs > 1:
            st, rule_errors = _replay_jobs(args, inputs, earliest, memory // args.jobs,
                                           {"changes": changes, "rejects": rejects, "segments": segments})
        else:
            replay = Replay(engine, args.as_of, on_change, on_reject, earliest=earliest,
                            cadence=args.population_cadence, scenarios=feed,
                            on_fact=None if facts is None else _writer(facts))
            if args.order == "time":
                time_order(replay, inputs, memory)
            else:
                for source, lines in inputs:
                    for n, line in lines:
                        replay.line(line, n, source)
            rows = replay.finish()
            if segments is not None:
                write_jsonl(segments, rows)
            if args.population_out:
                _write_population(args.population_out, engine, engine.population)
            st, rule_errors = replay.stats, engine.errors
    elapsed = time.perf_counter() - started
    summary = {"lines": st.lines, "applied": st.applied, "duplicates": st.duplicates,
               "anonymous": st.anonymous, "profiles": st.profiles,
               "communications": st.communications,
               "communication_duplicates": st.communication_duplicates, "rejected": dict(sorted(st.rejected.items())),
               "clients": st.clients, "changes": st.changes,
               "flips": dict(sorted(st.flips.items())), "flips_per_client_month": st.flip_rates(),
               "rule_errors": rule_errors, "order": args.order}
    if engine.spec.stats:
        summary["snapshots"] = st.snapshots
    if feed is not None:
        summary["scenarios"] = feed.summary()
    if args.summary_out:
        with _open_out(args.summary_out) as out:
            assert out is not None
            out.write(orjson.dumps(summary) + b"\n")
    timed = {**summary, "seconds": round(elapsed, 3),
             "receipts_per_second": round(st.lines / elapsed) if elapsed > 0 else None}
    sys.stderr.write(orjson.dumps(timed).decode() + "\n")
    if st.lines and st.rejected_total == st.lines:
        sys.stderr.write(f"loyalty replay: all {st.lines} receipt line(s) were rejected (see --rejects-out)\n")
    if args.strict and st.rejected_total:
        sys.stderr.write(f"loyalty replay: {st.rejected_total} rejected line(s) (--strict)\n")
        return 3
    return 0


def _write_population(path: str, engine: Any, snapshot: Any) -> None:
    from app.batch.population import snapshot_json

    with _open_out(path) as out:
        assert out is not None
        out.write(orjson.dumps(snapshot_json(engine, snapshot), option=orjson.OPT_INDENT_2) + b"\n")


def _replay_jobs(args: argparse.Namespace, inputs: list[tuple[str, Iterator[tuple[int, bytes]]]],
                 earliest: int, memory: int, outputs: dict[str, IO[bytes] | None]) -> tuple[Any, int]:
    from app.batch.jobs import Job, WorkerFailed, run

    job = Job(rules=args.rules, params=args.param, tz=args.tz, as_of=args.as_of, order=args.order,
              earliest=earliest, sort_memory=memory)
    try:
        return run(job, args.jobs, inputs, outputs)
    except WorkerFailed as exc:
        raise SystemExit(f"loyalty replay: {exc}") from None


def cmd_simulate(args: argparse.Namespace) -> int:
    from app.batch.simulate import DEFAULT_END, SimConfig, generate, profiles

    end = args.end if args.end is not None else DEFAULT_END
    cfg = SimConfig(clients=args.clients, days=args.days, seed=args.seed, end=end)
    with _open_out(args.out) as out:
        assert out is not None
        for line in generate(cfg):
            out.write(line + b"\n")
    if args.profiles_out:
        with _open_out(args.profiles_out) as out:
            assert out is not None
            for line in profiles(cfg):
                out.write(line + b"\n")
    if args.communications_out:
        from app.batch.simulate_comm import communications

        with _open_out(args.communications_out) as out:
            assert out is not None
            for line in communications(cfg):
                out.write(line + b"\n")
    return 0


def cmd_rules_check(args: argparse.Namespace) -> int:
    failed = 0
    for spec in args.files:
        try:
            rs = load_ruleset(spec)
        except RuleSetError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        try:
            Engine([rs])  # also checks the population statistics' 'where' conditions
        except LoyaltyError as exc:
            failed += 1
            print(f"error: {rs.path}: {exc}", file=sys.stderr)
            continue
        dims = ", ".join(f"{d.id}({len(d.segments) or 'value'})" for d in rs.dimensions)
        reads = f"; reads population.{{{', '.join(rs.population)}}}" if rs.population else ""
        print(f"ok: {rs.path}: ruleset {rs.name} version {rs.version}: {dims}{reads}")
    return 1 if failed else 0


def cmd_scenarios_check(args: argparse.Namespace) -> int:
    from agents.scenarios import load_scenario
    from rules.scenarios import check_against

    rulesets = [load_ruleset(spec) for spec in args.rules]
    failed = 0
    for spec in args.files:
        try:
            sc = load_scenario(spec)
            if rulesets:
                check_against(sc, rulesets)
        except RuleSetError as exc:
            failed += 1
            print(f"error: {exc}", file=sys.stderr)
            continue
        print(f"ok: {sc.path}: scenario {sc.id} version {sc.version}: {sc.summary()}")
    return 1 if failed else 0


def cmd_rules_list(args: argparse.Namespace) -> int:
    for name in preset_names():
        rs = load_ruleset(name)
        print(f"{name:14} {rs.version}  dimensions: {', '.join(d.id for d in rs.dimensions)}")
    return 0


def cmd_metrics(args: argparse.Namespace) -> int:
    from rules.metrics import catalogue_markdown

    print(catalogue_markdown())
    return 0


def parser() -> argparse.ArgumentParser:
    p = Parser(prog="loyalty", description="Streaming loyalty segmentation")
    sub = p.add_subparsers(dest="command", required=True)
    tz_default = os.environ.get("LOYALTY_TIMEZONE", "UTC")

    r = sub.add_parser("replay", help="run the rules over receipt files (JSON Lines, CSV, Parquet), no Kafka")
    r.add_argument("--rules", action="append", required=True, help="preset name or YAML path (repeatable)")
    r.add_argument("--param", action="append", default=[], help="RULESET.NAME=VALUE override")
    r.add_argument("--input", required=True, help="receipts: .jsonl, .csv or .parquet, optionally .gz "
                   "('-' for JSON Lines on stdin)")
    r.add_argument("--profiles", help="client profiles (same formats)")
    r.add_argument("--communications", help="communication events: messages sent, opened, answered... "
                   "(same formats)")
    r.add_argument("--format", choices=("jsonl", "csv", "parquet"), help="input format (default: from the extension)")
    r.add_argument("--columns", help="CSV/Parquet column names: NAME=SOURCE,... (e.g. client_id=CustomerID)")
    r.add_argument("--as-of", type=_instant, required=True, help="fire time-based changes up to this instant")
    r.add_argument("--order", choices=("time", "input"), default="time",
                   help="apply lines in event-time order (default; any order of the lines gives the same "
                   "outputs) or as they come (what a stream sees)")
    r.add_argument("--earliest", default=os.environ.get("LOYALTY_EARLIEST_EVENT") or "1970-01-01T00:00:00Z",
                   help="earliest event time accepted (LOYALTY_EARLIEST_EVENT)")
    r.add_argument("--sort-memory", type=_positive, default=256, metavar="MIB",
                   help="memory for sorting lines by event time; beyond it, sorted runs go to temporary files")
    r.add_argument("--population-cadence", choices=("day", "week", "month"),
                   default=os.environ.get("LOYALTY_POPULATION_CADENCE") or "day",
                   help="population snapshots at every business midnight, Monday or first of the month "
                   "(LOYALTY_POPULATION_CADENCE)")
    r.add_argument("--population-out", help="the last population snapshot as JSON (rules that read population.*)")
    r.add_argument("--segments-out", help="one line per client")
    r.add_argument("--facts-out", help="one receipt fact per applied receipt: amount and the segments it is "
                   "attributed to (what the worker publishes to LOYALTY_TOPIC_FACTS for the period reports)")
    r.add_argument("--changes-out", help="CloudEvents of every segment change")
    r.add_argument("--rejects-out", help="rejected lines with reasons")
    r.add_argument("--summary-out", help="the summary without timings (identical for any order of the lines)")
    r.add_argument("--scenarios", action="append", help="run scenarios too: preset names / YAML paths, "
                   "comma-separated, or all (docs/reference/scenarios.md); their report goes in the summary")
    r.add_argument("--contact-policy", help="contact policy YAML for --scenarios (default: the defaults)")
    r.add_argument("--actions-out", help="scenario actions, conversions, responses and revenue (CloudEvents)")
    r.add_argument("--tz", type=zone, default=tz_default, help="business time zone (LOYALTY_TIMEZONE)")
    r.add_argument("--strict", action="store_true", help="exit 3 if any line was rejected")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    r.add_argument("--jobs", type=_positive, default=1,
                   help="worker processes, clients split among them (outputs identical to 1)")
    r.set_defaults(fn=cmd_replay)

    s = sub.add_parser("simulate", help="generate realistic POS receipts")
    s.add_argument("--clients", type=_positive, default=1000, help="clients to simulate")
    s.add_argument("--days", type=_positive, default=90, help="days of history")
    s.add_argument("--seed", type=int, default=1, help="random seed (the same seed, the same receipts)")
    s.add_argument("--end", type=_instant, default=None, help="end of the simulated period ('now' allowed)")
    s.add_argument("--out", default="-", help="receipts file, JSON Lines ('-': stdout)")
    s.add_argument("--profiles-out", help="also write client profiles to this file")
    s.add_argument("--communications-out", help="also write communication events (messages sent, opened, "
                   "answered...) to this file")
    s.set_defaults(fn=cmd_simulate)

    rules_p = sub.add_parser("rules", help="rule sets")
    rsub = rules_p.add_subparsers(dest="rules_command", required=True)
    c = rsub.add_parser("check", help="validate rule set files")
    c.add_argument("files", nargs="+", help="rule set YAML files or preset names")
    c.set_defaults(fn=cmd_rules_check)
    ls = rsub.add_parser("list", help="list presets")
    ls.set_defaults(fn=cmd_rules_list)
    m = rsub.add_parser("metrics", help="print the metric catalogue")
    m.set_defaults(fn=cmd_metrics)
    sc = sub.add_parser("scenarios", help="scenarios").add_subparsers(dest="scenarios_command", required=True)
    scc = sc.add_parser("check", help="validate scenario files (preset names or paths)")
    scc.add_argument("files", nargs="+", help="scenario YAML files or preset names")
    scc.add_argument("--rules", action="append", default=[], help="also check against these rule sets")
    scc.set_defaults(fn=cmd_scenarios_check)
    from app.cli import reports as reports_cli  # loyalty period-report, client-report

    reports_cli.register(sub)
    from app.batch import campaign  # loyalty campaign
    campaign.register(sub)
    from app.batch import callplan  # loyalty call-plan

    callplan.register(sub)
    _add_service_commands(sub)
    return p


def _add_service_commands(sub: Any) -> None:
    """Commands that talk to Kafka or Redis (registered by :mod:`app.cli.service`)."""
    from app.cli import audience as audience_cli
    from app.cli import history as history_cli
    from app.cli import service as service_cli

    service_cli.register(sub)
    audience_cli.register(sub)
    history_cli.register(sub)  # loyalty history was|entered|stays|cohorts


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.fn(args)
    except (RuleSetError, AppError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130
    except OSError as exc:  # a file that cannot be read or written
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except Exception as exc:
        if os.environ.get("LOYALTY_TRACEBACK"):
            raise
        print(f"error: {type(exc).__name__}: {exc} (LOYALTY_TRACEBACK=1 shows where)", file=sys.stderr)
        return 70
    return code


if __name__ == "__main__":
    raise SystemExit(main())
