"""The one error type the CLI turns into a clear message (no traceback) and exit status 2."""


class HarnessError(Exception):
    """A problem with the user's input or environment, stated so a person can act on it.

    The message names the file (and the record inside it) and the problem.
    """


def where(path, *, record: str | None = None) -> str:
    """Format a location for an error message: ``path`` or ``path [record]``."""
    return f"{path} [{record}]" if record else str(path)
