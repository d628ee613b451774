"""Errors a user can fix, and how command lines report them.

Every such error is a ``RethinkError`` whose message is one line: what is wrong,
the file or parameter concerned, then what to do. Command lines print it as
``error: <message>`` (no traceback) and exit with status 2; anything else is a bug
and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable


class RethinkError(Exception):
    """A problem with the user's files, data or parameters; the message says the fix."""


def cli(main: Callable[[], object]) -> None:
    """Run a command line's ``main``; a RethinkError becomes ``error: ...`` and exit status 2.

    Use as ``if __name__ == "__main__": cli(main)``."""
    try:
        status = main()
    except RethinkError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.exit(status if isinstance(status, int) else 0)
