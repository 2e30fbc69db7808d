"""One error type for bad user input, shared by every package and CLI.

CLIs catch `InputError` and print its message as one line with exit status 2 (never a traceback).
The message names the field, file or flag that is wrong and, where useful, what to change.
"""


class InputError(ValueError):
    """Bad user input: a config, scenario, table, CLI flag or model answer that cannot be used."""
