"""``python -m tests.wa_standin``: run the stand-in until SIGTERM/SIGINT.

Prints ``LISTENING http(s)://HOST:PORT`` on stdout once it accepts connections.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading

from .server import API_VERSION, DEFAULT_TOKEN_TTL, GC_BATCH_SIZE, StandIn


def _user(value: str) -> tuple[str, str]:
    user, found, password = value.partition(":")
    if not found or not user:
        raise argparse.ArgumentTypeError(f"expected USER:PASSWORD, got {value!r}")
    return user, password


def _header(value: str) -> tuple[str, str]:
    name, found, content = value.partition(":")
    if not found or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'NAME: VALUE', got {value!r}")
    return name.strip(), content.strip()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m tests.wa_standin",
        description="Stand-in for the WhatsApp Business API client's REST API")
    p.add_argument("--listen", default="127.0.0.1:0", metavar="HOST:PORT")
    p.add_argument("--db-url", help="SQLAlchemy URL of the database holding `messages`")
    p.add_argument("--create-schema", action="store_true", help="create `messages` if missing")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--users", action="append", type=_user, default=[],
                   metavar="USER:PASSWORD", help="repeatable; default admin:secret")
    p.add_argument("--token-ttl", type=float, default=DEFAULT_TOKEN_TTL, metavar="SECONDS")
    p.add_argument("--multiconnect", metavar="NODE,NODE,...",
                   help="coreapp node names, e.g. wacore1,wacore2")
    p.add_argument("--callback-url")
    p.add_argument("--callback-header", action="append", type=_header,
                   default=[], metavar="'NAME: VALUE'", help="extra header on GC callbacks")
    p.add_argument("--media-dir", help="media GC deletes files here unused for 30 days")
    p.add_argument("--gc-delay", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--gc-max-rows-per-round", type=int, metavar="N")
    p.add_argument("--gc-batch-size", type=int, default=GC_BATCH_SIZE, metavar="N")
    p.add_argument("--gc-batch-pause", type=float, default=0.0, metavar="SECONDS",
                   help="pause after each DELETE batch: a GC that deletes slowly")
    p.add_argument("--media-gc-delay", type=float, default=0.0, metavar="SECONDS")
    p.add_argument("--api-version", default=API_VERSION)
    p.add_argument("--verbose", action="store_true", help="log requests to stderr")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    standin = StandIn(
        args.db_url, host=host or "127.0.0.1", port=int(port),
        users=dict(args.users) if args.users else None, token_ttl=args.token_ttl,
        multiconnect=[n.strip() for n in args.multiconnect.split(",") if n.strip()]
        if args.multiconnect else None,
        callback_url=args.callback_url, callback_headers=dict(args.callback_header),
        media_dir=args.media_dir, tls_cert=args.tls_cert, tls_key=args.tls_key,
        api_version=args.api_version, gc_delay=args.gc_delay,
        gc_max_rows_per_round=args.gc_max_rows_per_round, gc_batch_size=args.gc_batch_size,
        gc_batch_pause=args.gc_batch_pause,
        media_gc_delay=args.media_gc_delay, create_schema=args.create_schema,
        log_requests=args.verbose,
    )
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    standin.start()
    try:
        print(f"LISTENING {standin.url}", flush=True)
        while not done.wait(0.5):
            pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
