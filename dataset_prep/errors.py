"""The one exception type of :mod:`dataset_prep`.

Every problem with the user's input (a missing column, a non-numeric rating, a domain that
filtering emptied, an encoder that cannot load its weights, ...) raises :class:`PrepError`
with a message that names the file and the line or column. The command line prints the
message without a traceback and exits with status 2.
"""


class PrepError(Exception):
    """Bad input or an unusable setting; the message says what, where and what to do."""
