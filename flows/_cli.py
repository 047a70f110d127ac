"""What every command shares: usage errors and user errors as one line, exit codes, dates."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import date
from typing import NoReturn

from pipeline.demo import DEMO_DATES
from pipeline.errors import UserError
from pipeline.redact import redact


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit code 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {redact(message)} (see --help)\n")


def iso_date(text: str) -> date:
    """A YYYY-MM-DD date, as argparse's one-line usage error when it is not one."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def query_dates(args: argparse.Namespace) -> tuple[date, date]:
    """``--start`` and ``--end``, checked; without ``--stac`` the demo's dates by default."""
    start, end = args.start, args.end
    if args.stac is None:
        start, end = start or DEMO_DATES[0], end or DEMO_DATES[1]
    if start is None or end is None:
        raise UserError("--start and --end are required with --stac")
    if start > end:
        raise UserError(f"--start {start} is after --end {end}")
    return start, end


def run_command(
    run: Callable[[argparse.Namespace], int],
    p: argparse.ArgumentParser,
    argv: list[str] | None,
    interrupted: str,
) -> int:
    """``run`` the parsed arguments: a user error is one line (URLs without their secrets)
    and exit code 2; Ctrl-C prints ``interrupted`` (what was kept) and exits 130."""
    args = p.parse_args(argv)
    try:
        return run(args)
    except UserError as err:
        print(f"error: {redact(str(err))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {interrupted}", file=sys.stderr)
        return 130
