"""The one exception type for bad input a user can fix.

Library code raises :class:`LowrankError` with a message that names the offending path, key or shape; the CLI
prints it as a single ``Error: <message>`` line on stderr and exits with status 2. Anything else is a bug.
:func:`check_regex` is the one check of a regular expression a user gives (``--modules``, a target regex).
"""

import re


class LowrankError(Exception):
    """Bad input (missing path, wrong format, shape mismatch, invalid option): the message says what and where."""


def check_regex(what: str, pattern: str) -> None:
    """Raise LowrankError naming ``what`` (``--modules``, ``target regex``) when ``pattern`` does not compile."""
    try:
        re.compile(pattern)
    except re.error as error:
        raise LowrankError(f"{what} {pattern!r} is not a valid regular expression: {error}") from None
