"""Which store failures mean "unreachable" (retry later) and which mean "this row is refused"."""

from sqlalchemy import exc


def is_unavailable(err: BaseException) -> bool:
    """Whether ``err`` says the database cannot be used now, rather than refusing the data.

    Connection failures, a server restarting, a locked SQLite file or a pool with no connection
    free in time are the store's condition, the same for every row (503, retry); a value too
    long for its column or a duplicate key is the row's (only its own request fails).

    Args:
        err: An exception raised by a store call.

    Returns:
        True for operational and connection errors.
    """
    if isinstance(err, exc.DBAPIError) and err.connection_invalidated:
        return True
    return isinstance(
        err,
        exc.OperationalError | exc.InterfaceError | exc.DisconnectionError | exc.TimeoutError,
    )
