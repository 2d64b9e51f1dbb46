"""``gga db upgrade``: create or migrate the result store's tables (Alembic)."""

import argparse
import sys

from service.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("db", help="result store maintenance")
    p.add_argument("--database-url", help="SQLAlchemy URL of the store (default GGA_DATABASE_URL)")
    sub = p.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser("upgrade", help="migrate to the newest schema (or --revision)")
    up.add_argument("--revision", default="head")
    sub.add_parser("current", help="print the schema revision")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from service.store.migrate import current, upgrade

    url = get_settings(database_url=args.database_url).database_url
    if args.db_command == "upgrade":
        upgrade(url, args.revision)
    sys.stdout.write(f"{current(url) or 'empty'}\n")
    return 0
