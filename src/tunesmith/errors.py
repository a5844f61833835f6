"""The base class of errors the user can fix (bad config, data, paths): the CLI prints them as
one clear message and exits with status 2, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """A problem in what the user asked for; the message names the file/field and the fix."""
