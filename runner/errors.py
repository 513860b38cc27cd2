"""The one exception type for mistakes a user can fix by changing the config or environment.

The entry point turns it into one line on stderr and exit code 2; anything else is a bug and
keeps its stack trace.
"""


class UserError(Exception):
    """A mistake in the config or environment. The message names the key and the fix."""
