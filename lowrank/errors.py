"""The one exception type for bad input a user can fix.

Library code raises :class:`LowrankError` with a message that names the offending path, key or shape; the CLI
prints it as a single ``Error: <message>`` line on stderr and exits with status 2. Anything else is a bug.
"""


class LowrankError(Exception):
    """Bad input (missing path, wrong format, shape mismatch, invalid option): the message says what and where."""
