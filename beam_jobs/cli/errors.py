"""The one exception type for problems the user can fix (bad flags, missing input, ...).

Command-line entry points turn it into exit code 2 and one plain sentence; anything else is a
bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem with the user's input or flags, stated as one sentence they can act on."""
