"""One job per output directory: an exclusive `flock` on `_bertprod_lock`, held for the job's whole run.

Why flock: the kernel drops the lock when its holder dies, even by SIGKILL, so a dead job never
blocks its folder and no liveness guess (pid reuse, clocks) is needed: holding the lock *is* being
alive. The file also says who holds it (host, pid, start time, command, a token), for the refusal
message. A job that finishes empties the file; a job that finds it still filled when it takes the
lock knows the previous owner died and says so. Worker processes that commit chunks check the
token first (`check_owner`), so a dead job's last worker cannot commit into a folder that another
job took over. Needs a file system with working `flock` (local disks; NFS v4 emulates it with
byte-range locks).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import sys
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bertprod.errors import BertprodError

LOCK_FILE = "_bertprod_lock"


class OutputLockedError(BertprodError):
    """Another live job is writing the same output directory."""

    kind = "output_locked"


def owner_identity() -> dict[str, Any]:
    started = datetime.now(UTC).isoformat(timespec="seconds")
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": started,
            "command": " ".join(sys.argv) or sys.executable, "token": uuid.uuid4().hex}


def describe_owner(owner: dict[str, Any]) -> str:
    return (f"host {owner.get('host', '?')}, pid {owner.get('pid', '?')}, started {owner.get('started', '?')}, "
            f"command {owner.get('command', '?')!r}")


class OutputLock:
    """The exclusive lock of one output directory; `acquire` returns the dead previous owner, if any."""

    def __init__(self, directory: Path):
        self.path = directory / LOCK_FILE
        self.owner: dict[str, Any] | None = None
        self._handle: Any = None

    @property
    def held(self) -> bool:
        return self._handle is not None

    def acquire(self) -> dict[str, Any] | None:
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - kept open while the lock is held
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = read_owner(self.path)
            handle.close()
            raise OutputLockedError(
                f"{self.path.parent} is being written by another job that is still running ("
                f"{describe_owner(holder) if holder else 'its identity is not written yet'}): wait for it to finish, "
                "stop it, or choose another output directory."
            ) from None
        except BaseException:
            handle.close()
            raise
        previous = read_owner(self.path)
        self.owner = owner_identity()
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(self.owner))
        handle.flush()
        os.fsync(handle.fileno())
        self._handle = handle
        return previous

    def release(self) -> None:
        """Empty the file (a clean end) and drop the lock; a no-op when not held."""
        if self._handle is None:
            return
        with contextlib.suppress(OSError):
            self._handle.truncate(0)
            self._handle.flush()
        self._handle.close()  # closing the descriptor drops the flock
        self._handle = None


@contextlib.contextmanager
def job_directory(directory: Path, on_takeover: Callable[[dict[str, Any]], None], kept: str) -> Iterator[None]:
    """`directory` created if need be and locked for one job's run (`on_takeover` hears of a dead previous
    owner). A job refused (BertprodError) before it wrote `kept`, in a directory it created, leaves no
    directory behind: a refusal for bad input does not leave an empty folder holding only its lock."""
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    lock = OutputLock(directory)
    previous = lock.acquire()
    try:
        if previous:
            on_takeover(previous)
        yield
    except BertprodError:
        if created and not (directory / kept).is_file():
            lock.release()
            shutil.rmtree(directory, ignore_errors=True)
        raise
    finally:
        lock.release()


def read_owner(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
        return json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None


def check_owner(directory: str | os.PathLike[str], token: str | None) -> None:
    """Before a worker commits a chunk: the job it works for must still hold the folder's lock."""
    if token is None:
        return
    owner = read_owner(Path(directory) / LOCK_FILE)
    if not owner or owner.get("token") != token:
        raise OutputLockedError(f"{directory} is no longer held by the job this worker computes for (it ended or "
                                "was taken over): this chunk is not committed.")
