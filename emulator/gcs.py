"""Where batch prediction jobs read their input and write their output: Cloud Storage, or memory in unit tests.

`GcsStore` uses google-cloud-storage, which honours ``STORAGE_EMULATOR_HOST`` (the GCS emulator of tests/gcp;
without it the store would try real Google Cloud Storage and fail, which the job reports as FAILED). Its calls
block, so the job runner calls them in a worker thread. `MemoryStore` keeps objects in a dict.

Usage::

    store = GcsStore()                                     # or MemoryStore({"gs://b/in.jsonl": b"..."})
    store.read("gs://b/in.jsonl"); store.write("gs://b/out/predictions.jsonl", b"...")
    store.match("gs://b/in/*.jsonl")                       # the URIs a (possibly wildcard) URI names
"""

from __future__ import annotations

import fnmatch
import threading
from typing import Protocol

__all__ = ["GcsStore", "MemoryStore", "ObjectStore", "split_uri"]


class ObjectStore(Protocol):
    def read(self, uri: str) -> bytes: ...

    def write(self, uri: str, data: bytes) -> None: ...

    def match(self, uri: str) -> list[str]: ...


def split_uri(uri: str) -> tuple[str, str]:
    """``gs://bucket/a/b`` → (``bucket``, ``a/b``); ValueError for anything else."""
    if not isinstance(uri, str) or not uri.startswith("gs://"):
        raise ValueError(f"not a gs:// URI: {uri!r}")
    bucket, _, name = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"no bucket in {uri!r}")
    return bucket, name


def _glob_prefix(name: str) -> str:
    cut = min((name.find(c) for c in "*?[" if c in name), default=len(name))
    return name[:cut]


class GcsStore:
    """google-cloud-storage, built lazily on first use (the emulator starts without it when no job runs)."""

    def __init__(self) -> None:
        self._client = None
        self._lock = threading.Lock()

    def _bucket(self, name: str):
        with self._lock:
            if self._client is None:
                from google.cloud import storage

                self._client = storage.Client()
        return self._client.bucket(name)

    def read(self, uri: str) -> bytes:
        bucket, name = split_uri(uri)
        return self._bucket(bucket).blob(name).download_as_bytes()

    def write(self, uri: str, data: bytes) -> None:
        bucket, name = split_uri(uri)
        self._bucket(bucket).blob(name).upload_from_string(data, content_type="application/jsonl")

    def match(self, uri: str) -> list[str]:
        bucket, name = split_uri(uri)
        if _glob_prefix(name) == name:
            return [uri]
        blobs = self._bucket(bucket).client.list_blobs(bucket, prefix=_glob_prefix(name))
        return sorted(f"gs://{bucket}/{b.name}" for b in blobs if fnmatch.fnmatchcase(b.name, name))


class MemoryStore:
    """Objects in a dict keyed by URI (for unit tests)."""

    def __init__(self, objects: dict[str, bytes] | None = None) -> None:
        self.objects = dict(objects or {})

    def read(self, uri: str) -> bytes:
        split_uri(uri)
        if uri not in self.objects:
            raise FileNotFoundError(f"No such object: {uri}")
        return self.objects[uri]

    def write(self, uri: str, data: bytes) -> None:
        split_uri(uri)
        self.objects[uri] = data

    def match(self, uri: str) -> list[str]:
        return sorted(u for u in self.objects if fnmatch.fnmatchcase(u, uri))
