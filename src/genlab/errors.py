"""The one exception genlab raises for bad input: the CLI prints its message as one line."""


class GenlabError(Exception):
    """A user-facing error: the message names the file or flag and what is wrong."""
