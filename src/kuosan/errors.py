"""The one exception type users see. The CLI prints its message and exits 2."""


class KuosanError(Exception):
    """A problem with the user's input or files, with a message that says what to do."""
