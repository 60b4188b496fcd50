"""The one exception type that means "the user asked for something we cannot do"."""


class UsageError(Exception):
    """Bad flag, bad config value or bad data file.

    The CLI reports it once (from rank 0) and exits with status 2; every other
    exception is a bug or a crash and aborts the whole MPI job.
    """

    exit_code = 2
