"""The ``neuralops`` command: migrate, serve, and the tools built on them."""

from __future__ import annotations

import argparse
import gc
import logging
import sys
from collections.abc import Sequence

from neuralops.servers.gateway.server import HttpPortUnavailable
from neuralops.servers.runtime.app import SERVICES, App, PortUnavailable
from neuralops.servers.runtime.config import Config, ConfigError
from neuralops.servers.runtime.db import open_database
from neuralops.servers.runtime.errors import StorageUnavailable
from neuralops.servers.runtime.migrate import MigrationError, applied, migrate
from neuralops.servers.tooling import localprom

log = logging.getLogger("neuralops")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Probe is noise


# Allocations between young garbage collections in a serving process (CPython: 700).
YOUNG_COLLECTION = 20_000


def tune_collector() -> None:
    """Once the servers have started: freeze the process's own objects (modules,
    descriptors, servers, pools) out of every later collection, and collect young
    objects every YOUNG_COLLECTION allocations. Requests allocate many short-lived
    containers (a 200-run BatchLogRuns about 6,000 dicts and lists), nearly all freed
    by reference counting when the call ends; with the default thresholds the
    collector still ran young collections every few hundred runs and, as converted
    runs outlived them, older ones walking the whole heap (about 3 ms per batch on
    average, single pauses of 70 ms). Reference cycles are still collected, later."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION, middle, old)


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    db = open_database(config.postgres_dsn, config.sqlite_path)
    try:
        now = migrate(db)
        print(f"storage: {db.describe()}")
        print(f"applied now: {', '.join(now) or 'nothing (up to date)'}")
        print(f"applied in all: {', '.join(applied(db))}")
    finally:
        db.close()
    return 0


def _parse_services(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if "all" in names:
        return SERVICES
    bad = [n for n in names if n not in SERVICES]
    if bad:
        raise argparse.ArgumentTypeError(
            f"unknown service {bad[0]!r}; choose from {', '.join(SERVICES)}"
        )
    return names


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from neuralops.servers.tooling.stack import start_metrics, wait_for_stop_signal

    app = App(config, args.services)
    try:
        start_metrics(config)  # first: a taken metrics port fails before anything starts
        app.start()
        for name in app.services:
            print(
                f"{app.running[name].parts.full_name} on {config.bind_host}:{app.port(name)}",
                flush=True,
            )
        if app.http is not None:
            print(
                f"HTTP/JSON and console on http://{config.bind_host}:{app.http.port}/", flush=True
            )
        tune_collector()
        print("ready", flush=True)
        wait_for_stop_signal()
        app.stop(grace=args.grace)
    finally:
        app.stop(grace=0)
    log.info("stopped")
    return 0


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("neuralops")
    except PackageNotFoundError:
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neuralops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"neuralops {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("migrate", help="apply database migrations (POSTGRES_DSN, else SQLite)")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("serve", help="migrate, then run the gRPC services until SIGTERM/Ctrl-C")
    p.add_argument(
        "--services",
        type=_parse_services,
        default=SERVICES,
        help=f"comma-separated subset of {','.join(SERVICES)} (default: all)",
    )
    p.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight calls get on shutdown"
    )
    p.set_defaults(func=cmd_serve)

    from neuralops.servers.tooling import stack

    stack.add_commands(sub)

    from neuralops.clients import spool_cli

    p = sub.add_parser("spool", help="runs not yet delivered: spool and dead letters")
    spool_cli.add_arguments(p)
    p.set_defaults(func=lambda config, args: spool_cli.run(args))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        config = Config.from_env()
        code: int = args.func(config, args)
    except (
        StorageUnavailable,
        MigrationError,
        PortUnavailable,
        HttpPortUnavailable,
        ConfigError,
        localprom.DataDirBusy,
    ) as exc:
        print(f"neuralops: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
