"""The one exception type for a user's mistakes.

A :class:`CnnlabError` carries a single-line message that names the file or value
and what is wrong with it. The command line prints it and exits with status 2;
anything else that escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class CnnlabError(Exception):
    """A problem with the user's input: a bad file, an unknown name, a bad value."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
