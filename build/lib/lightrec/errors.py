"""User-facing errors: one clear sentence, shown without a traceback by the entry points."""


class LightrecError(Exception):
    """An error caused by the user's input (data file, config, run folder), not by a bug.

    The message must be one sentence that names the file, row or key at fault.
    """
