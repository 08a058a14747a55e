"""Where the job ledger lives: a local directory or a gs:// prefix, behind one small interface. No Beam import.

    store = open_store("gs://my-bucket/tmp/chatbeam-ledger/run-1")    # or a local directory
    store.create("log/00000001", b'{"kind": "grant", ...}')           # True: ours; False: the name was taken
    store.read("log/00000001")                                         # bytes, or None when absent
    store.put("procs/worker-a", b'{"beat": 7, ...}')                    # overwrite (only its owner writes it)
    store.list("procs/")                                               # {name: bytes}, sorted by name
    check_store(store)                                                 # before the run: LedgerUnavailable if unfit

The job ledger (client/ledger.py) needs one primitive that every store here provides and that a plain file
system or GCS give without any service: **create if absent**, atomically. On GCS that is an upload with the
precondition ``ifGenerationMatch=0`` (google-cloud-storage's ``if_generation_match=0``: 412 Precondition Failed
when the object exists); on a local directory it is ``os.link`` of a fully written temp file (``EEXIST`` when the
name exists). Every ledger entry is a new object written once, so GCS's limit of about one write per second per
object name never applies; the only objects written repeatedly are each process's own heartbeat, at most once
per heartbeat interval (default 2 s).

``check_store`` proves the primitive on the real location before the run (a probe created twice must fail the
second time): a store that silently ignores the precondition would let processes overspend, so it is refused.

Thread-safe: a store may be used from several threads (each call is one request / one file operation).
"""

from __future__ import annotations

import errno
import os
import tempfile
import threading
import uuid
from typing import Protocol

__all__ = ["GcsStore", "LedgerStore", "LedgerUnavailable", "LocalDirStore", "check_store", "open_store"]

PAYLOAD_KEY = "chatbeam-ledger"  # GCS custom metadata key that repeats the (small) body, so one list reads all


class LedgerUnavailable(RuntimeError):
    """The ledger location cannot be used (unreachable, not writable, or no atomic create-if-absent)."""


class LedgerStore(Protocol):
    url: str

    def create(self, name: str, data: bytes) -> bool: ...

    def read(self, name: str) -> bytes | None: ...

    def put(self, name: str, data: bytes) -> None: ...

    def list(self, prefix: str, start_after: str = "") -> dict[str, bytes]: ...


class LocalDirStore:
    """A directory on this machine (DirectRunner: every worker process shares the file system)."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)
        self.url = self.root

    def _path(self, name: str) -> str:
        return os.path.join(self.root, *name.split("/"))

    def _tmp(self, path: str, data: bytes) -> str:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        return tmp

    def create(self, name: str, data: bytes) -> bool:
        path = self._path(name)
        tmp = self._tmp(path, data)
        try:
            os.link(tmp, path)  # atomic, and fails if the name exists: readers never see a partly written entry
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def read(self, name: str) -> bytes | None:
        try:
            with open(self._path(name), "rb") as fh:
                return fh.read()
        except FileNotFoundError:
            return None

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        os.replace(self._tmp(path, data), path)

    def list(self, prefix: str, start_after: str = "") -> dict[str, bytes]:
        folder, _, stem = prefix.rpartition("/")
        try:
            names = sorted(os.listdir(self._path(folder) if folder else self.root))
        except FileNotFoundError:
            return {}
        out: dict[str, bytes] = {}
        for base in names:
            name = f"{folder}/{base}" if folder else base
            if base.startswith(stem) and not base.startswith(".tmp-") and name > start_after:
                data = self.read(name)
                if data is not None:
                    out[name] = data
        return out


class GcsStore:
    """A gs://bucket/prefix through google-cloud-storage (``STORAGE_EMULATOR_HOST`` points it at an emulator)."""

    def __init__(self, url: str, client=None) -> None:
        if not url.startswith("gs://"):
            raise ValueError(f"not a gs:// URL: {url!r}")
        bucket, _, prefix = url[len("gs://"):].partition("/")
        if not bucket:
            raise ValueError(f"no bucket in {url!r}")
        self.url = url.rstrip("/")
        self._prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self._bucket_name = bucket
        self._client = client
        self._lock = threading.Lock()

    @property
    def bucket(self):
        with self._lock:
            if self._client is None:
                from google.cloud import storage  # imported here: only gs:// ledgers need it

                self._client = storage.Client()
            return self._client.bucket(self._bucket_name)

    def _blob(self, name: str, data: bytes | None = None):
        blob = self.bucket.blob(self._prefix + name)
        if data is not None and len(data) < 4000:
            blob.metadata = {PAYLOAD_KEY: data.decode("utf-8")}
        return blob

    def create(self, name: str, data: bytes) -> bool:
        from google.api_core.exceptions import PreconditionFailed

        try:
            # A conditional upload is retried by the client on transient errors; a retry of an upload that had in
            # fact succeeded answers 412. So on 412 compare: if the object holds exactly our bytes, it is ours
            # (every entry carries a unique nonce, so equal bytes mean the same write).
            self._blob(name, data).upload_from_string(data, content_type="application/json",
                                                      if_generation_match=0)
            return True
        except PreconditionFailed:
            return self.read(name) == data

    def read(self, name: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        try:
            return self._blob(name).download_as_bytes()
        except NotFound:
            return None

    def put(self, name: str, data: bytes) -> None:
        self._blob(name, data).upload_from_string(data, content_type="application/json")

    def list(self, prefix: str, start_after: str = "") -> dict[str, bytes]:
        full = self._prefix + prefix
        kwargs = {"start_offset": self._prefix + start_after + "\x00"} if start_after else {}
        out: dict[str, bytes] = {}
        for blob in self._client_for_list().list_blobs(self._bucket_name, prefix=full, **kwargs):
            name = blob.name[len(self._prefix):]
            if name <= start_after:
                continue  # a server that ignores startOffset (the emulator) is filtered here
            payload = (blob.metadata or {}).get(PAYLOAD_KEY)
            data = payload.encode("utf-8") if payload is not None else self.read(name)
            if data is not None:
                out[name] = data
        return dict(sorted(out.items()))

    def _client_for_list(self):
        self.bucket  # noqa: B018 - builds the client
        return self._client


def open_store(url: str) -> LedgerStore:
    """A store for a gs:// URL or a local directory path."""
    if url.startswith("gs://"):
        return GcsStore(url)
    if "://" in url:
        raise LedgerUnavailable(f"the ledger must be a local directory or gs:// ({url!r})")
    return LocalDirStore(url)


def check_store(store: LedgerStore) -> None:
    """Prove the location works for a ledger: it is writable and honours create-if-absent. Raises
    LedgerUnavailable with a one-line reason."""
    name = f"probe/{uuid.uuid4().hex}"
    data = b'{"probe": true}'
    try:
        first = store.create(name, data)
        second = store.create(name, b'{"probe": "again"}')
        back = store.read(name)
    except Exception as exc:  # noqa: BLE001 - any failure here means the location is unusable; say why, briefly
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).splitlines()[0][:200]
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            reason = f"not writable ({reason})"
        raise LedgerUnavailable(f"cannot write the job ledger at {store.url}: {type(exc).__name__}: {reason}") \
            from None
    if second:
        raise LedgerUnavailable(f"the job ledger at {store.url} does not honour create-if-absent (a second "
                                "conditional create of one name succeeded), so processes could overspend")
    if not first or back != data:
        raise LedgerUnavailable(f"cannot write the job ledger at {store.url}: a new object did not read back")
