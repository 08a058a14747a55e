"""The run lock: at most one chatbeam run writes a given output prefix at a time.

    with RunLock(["out/r", "out/r_errors"], run_id=run_id, force=False):
        ...                                  # run; released at the end, on failure and on signals

Two runs into one prefix would both pay for every record, and with different ``--num_shards`` both shard sets would
stay (1,000 result lines for 500 ids). So a run takes ``PREFIX.lock`` next to each file prefix it writes; a second
run fails at once (exit 2) with a message naming the holder: run id, host, pid and start time.

* **Local paths**: an advisory ``flock`` on the lock file, which the kernel releases when the holder dies, however
  it dies (kill -9 included), so a ``--resume`` after a crash never finds a stale lock. The file holds the holder's
  details for the message and is removed on release.
* **gs://**: an object created with the precondition ``ifGenerationMatch=0`` (create only if absent: atomic on GCS)
  and deleted on release with ``ifGenerationMatch`` of our own generation, so a broken lock is never deleted twice.
  An object cannot die with its holder: a holder on this host whose pid is gone is broken automatically; anything
  else needs ``--force``.
* **Other schemes**: best effort (exists, then create), with a warning that it is not atomic.

``--force`` breaks a lock held by someone else: the caller vouches that the holder is dead (or accepts the
consequences).
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import functools
import json
import logging
import os
import socket
from dataclasses import asdict, dataclass
from typing import Any, Callable

from apache_beam.io.filesystems import FileSystems

from transforms.files import RunFilesError, lock_path

__all__ = ["Holder", "LockHeld", "RunLock"]

log = logging.getLogger(__name__)

_TRIES = 5  # create/inspect/break rounds before giving up on a lock that keeps changing hands


class LockHeld(RunFilesError):
    """Another run holds the lock of an output prefix."""


@dataclass(frozen=True)
class Holder:
    run_id: str
    host: str
    pid: int
    started_at: str

    @classmethod
    def me(cls, run_id: str) -> "Holder":
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        return cls(run_id, socket.gethostname(), os.getpid(), now)

    @classmethod
    def parse(cls, data: bytes) -> "Holder | None":
        try:
            fields = json.loads(data)
            return cls(str(fields["run_id"]), str(fields["host"]), int(fields["pid"]), str(fields["started_at"]))
        except (ValueError, KeyError, TypeError):
            return None

    def encode(self) -> bytes:
        return (json.dumps(asdict(self)) + "\n").encode()

    def describe(self) -> str:
        return f"run {self.run_id[:12]} (pid {self.pid} on {self.host}, started {self.started_at})"

    def gone(self) -> bool:
        """The holder ran on this host and its process no longer exists."""
        if self.host != socket.gethostname():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False  # alive, another user's
        return False


def _held(path: str, holder: Holder | None) -> LockHeld:
    who = holder.describe() if holder else "another run (its lock file is still being written or unreadable)"
    return LockHeld(f"{path[:-len('.lock')]!r} is being written by {who}; wait for it to finish, or if it is dead, "
                    f"rerun with --force to break its lock ({path})")


class _LocalLock:
    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._made: list[str] = []  # directories created for the lock, deepest first (removed again if empty)

    def acquire(self, me: Holder, force: bool) -> None:
        directory = os.path.dirname(os.path.abspath(self.path))
        while not os.path.exists(directory):
            self._made.append(directory)
            directory = os.path.dirname(directory)
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        for _ in range(_TRIES):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = Holder.parse(os.pread(fd, 4096, 0))
                os.close(fd)
                if not force:
                    raise _held(self.path, holder) from None
                log.warning("--force: breaking the lock %s of %s", self.path, holder.describe() if holder else "?")
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)  # the holder keeps its lock on the unlinked file; we make a new one
                continue
            # The holder may have removed the file between our open and our flock: lock the file at the path.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, me.encode(), 0)
            self._fd = fd
            return
        raise _held(self.path, None)

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                os.unlink(self.path)  # before unlocking, so nobody locks a file that is about to vanish
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)
        for directory in self._made:  # a run refused after the lock (say, by the ledger check) leaves nothing
            try:
                os.rmdir(directory)
            except OSError:
                break


class _GcsLock:
    def __init__(self, path: str, client_factory: Callable[[], Any]) -> None:
        self.path = path
        bucket, _, self._name = path[len("gs://"):].partition("/")
        self._bucket_name = bucket
        self._client_factory = client_factory
        self._generation: int | None = None

    def _bucket(self) -> Any:
        return self._client_factory().bucket(self._bucket_name)

    def acquire(self, me: Holder, force: bool) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        bucket = self._bucket()
        for _ in range(_TRIES):
            blob = bucket.blob(self._name)
            try:
                blob.upload_from_string(me.encode(), content_type="application/json", if_generation_match=0)
                self._generation = blob.generation
                return
            except PreconditionFailed:
                pass
            existing = bucket.get_blob(self._name)
            if existing is None:
                continue  # released meanwhile: try again
            holder = Holder.parse(existing.download_as_bytes())
            stale = holder is not None and holder.gone()
            if not (force or stale):
                raise _held(self.path, holder)
            log.warning("%s: breaking the lock %s of %s", "--force" if force else "stale (its process is gone)",
                        self.path, holder.describe() if holder else "?")
            with contextlib.suppress(NotFound, PreconditionFailed):
                existing.delete(if_generation_match=existing.generation)
        raise _held(self.path, None)

    def release(self) -> None:
        from google.api_core.exceptions import NotFound, PreconditionFailed

        generation, self._generation = self._generation, None
        if generation is not None:
            with contextlib.suppress(NotFound, PreconditionFailed):  # broken by a --force run: not ours to delete
                self._bucket().blob(self._name).delete(if_generation_match=generation)


class _BestEffortLock:
    """Schemes without an atomic create-if-absent through Beam's FileSystems."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._held = False

    def acquire(self, me: Holder, force: bool) -> None:
        log.warning("the lock %s is not atomic on this file system: two runs started together may both proceed",
                    self.path)
        if FileSystems.exists(self.path) and not force:
            with FileSystems.open(self.path) as fh:
                holder = Holder.parse(fh.read())
            if holder is None or not holder.gone():
                raise _held(self.path, holder)
        with FileSystems.create(self.path) as fh:
            fh.write(me.encode())
        self._held = True

    def release(self) -> None:
        if self._held:
            self._held = False
            with contextlib.suppress(Exception):
                FileSystems.delete([self.path])


class RunLock:
    """Locks every prefix in ``prefixes`` (in a stable order), or none: a held lock releases what was taken.

    ``gcs_client``: a callable returning a ``google.cloud.storage.Client`` (the run's credentials); only called
    for gs:// prefixes.
    """

    def __init__(self, prefixes: list[str], *, run_id: str, force: bool = False,
                 gcs_client: Callable[[], Any] | None = None) -> None:
        self.paths = sorted({lock_path(p) for p in prefixes if p})
        self._me = Holder.me(run_id)
        self._force = force
        self._gcs_client = functools.lru_cache(maxsize=1)(gcs_client or _default_gcs_client)  # one client
        self._locks: list[Any] = []

    def _lock_for(self, path: str) -> Any:
        if "://" not in path:
            return _LocalLock(path)
        if path.startswith("gs://"):
            return _GcsLock(path, self._gcs_client)
        return _BestEffortLock(path)

    def acquire(self) -> "RunLock":
        """Take every lock (idempotent); raises LockHeld naming the holder of the first one held elsewhere."""
        if self._locks:
            return self
        try:
            for path in self.paths:
                lock = self._lock_for(path)
                lock.acquire(self._me, self._force)
                self._locks.append(lock)
        except BaseException:
            self.release()
            raise
        return self

    def release(self) -> None:
        while self._locks:
            lock = self._locks.pop()
            try:
                lock.release()
            except Exception as exc:  # noqa: BLE001 - never let a lock hide the run's own outcome
                log.warning("could not release the lock %s: %r", lock.path, exc)

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _default_gcs_client() -> Any:
    from apache_beam.io.gcp.gcsio import create_storage_client
    from apache_beam.options.pipeline_options import PipelineOptions

    return create_storage_client(PipelineOptions([]))
