"""One error type for bad user input, shared by every package and CLI.

CLIs catch `InputError` and print its message as one line with exit status 2 (never a traceback).
The message names the field, file or flag that is wrong and, where useful, what to change.
"""


class InputError(ValueError):
    """Bad user input: a config, scenario, table, CLI flag or model answer that cannot be used."""


def cli_exit(body, *, interrupted: str | None = None, interrupted_code: int = 2) -> int:
    """Run a CLI's body and return its exit status: an `InputError` becomes one `error: <msg>` line on
    stderr (whitespace folded, so it stays one line) and status 2; with `interrupted`, Ctrl-C prints
    that line and returns `interrupted_code` (finished work is kept by the callers' own design)."""
    import sys
    try:
        return body()
    except InputError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if interrupted is None:
            raise
        print(interrupted, file=sys.stderr)
        return interrupted_code
