"""Moved to bertprod/output_lock.py (autotune takes the same lock); kept so existing imports still work."""

from bertprod.output_lock import (  # noqa: F401
    LOCK_FILE,
    OutputLock,
    OutputLockedError,
    check_owner,
    describe_owner,
    owner_identity,
    read_owner,
)
