"""The one exception genlab raises for bad input: the CLI prints its message as one line."""


class GenlabError(Exception):
    """A user-facing error: the message names the file or flag and what is wrong."""


class MembersFailed(GenlabError):
    """Some members of a command failed (bad data, a diverged loss) while the others were
    trained: one line naming each failed run and why."""

    def __init__(self, failures: list[tuple[object, GenlabError]], total: int) -> None:
        self.failures = failures
        self.total = total
        if total == 1 and len(failures) == 1:
            message = str(failures[0][1])
        else:
            named = "; ".join(f"{getattr(p, 'name', p)}: {e}" for p, e in failures)
            message = f"{len(failures)} of {total} members failed ({named})"
        super().__init__(message)
