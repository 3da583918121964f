"""The one exception type for mistakes a user can make.

Anything raised as :class:`LangNeuronsError` is a problem with the user's input (a language that
is not in the corpus, a missing directory, statistics from another model...). Its message is one
line naming the bad value and what is allowed; the command line prints it and exits with status 2.
Anything else that escapes is a bug in this package.
"""


class LangNeuronsError(ValueError):
    """A user-caused error: bad argument, missing file, incompatible artifacts."""


def choices(values) -> str:
    """Format allowed values for an error message: ``'a', 'b', 'c'``."""
    return ", ".join(repr(v) for v in values)
