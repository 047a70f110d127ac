"""What every command shares: usage errors and user errors as one line, exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import NoReturn

from pipeline.errors import UserError
from pipeline.redact import redact


class OneLineErrors(argparse.ArgumentParser):
    """Usage errors as one line on stderr and exit code 2, like every other user error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {redact(message)} (see --help)\n")


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
