"""The one seam that points Beam's own BigQuery connectors at a BigQuery emulator (``--bigquery_endpoint``).

Beam 2.77's Python BigQuery connectors have no endpoint option. They talk to BigQuery through three clients:

==========================================  ==================================  =========================================
client                                      used for                            how it is pointed elsewhere
==========================================  ==================================  =========================================
apitools ``BigqueryV2`` (bigquery_tools)    tables/datasets/jobs (metadata,     class attribute ``BASE_URL``: set here
                                            create, load and query jobs)
google-cloud-bigquery ``Client``            ``insertAll`` (STREAMING_INSERTS)   env ``BIGQUERY_EMULATOR_HOST``: set here
google-cloud-bigquery-storage               Storage Read API (DIRECT_READ)      none: Beam calls ``BigQueryReadClient()``
``BigQueryReadClient`` (gRPC, TLS)                                              with no arguments, so the module that
                                                                                Beam's bigquery.py imports it from is
                                                                                swapped for one whose client talks
                                                                                plaintext gRPC to the emulator
==========================================  ==================================  =========================================

``redirect_beam_bigquery(endpoint)`` does those three things for the current process, and only when
``--bigquery_endpoint`` is given; without it nothing here runs. It is meant for the DirectRunner (the in-process
runners see the change; Dataflow workers and ``--direct_running_mode=multi_processing`` workers do not).

Beam's clients still ask for Application Default Credentials even then (Beam's lookup retries for ~30 s before
falling back to anonymous). Against emulators, point ``GOOGLE_APPLICATION_CREDENTIALS`` at a placeholder
``authorized_user`` file with a far-future token (``tests/gcp/emulators.py`` writes one): its token is sent to the
emulators only, and it is never refreshed.

    >>> ep = BigQueryEndpoint("http://127.0.0.1:9050", "127.0.0.1:9060")   # the flags: pipelines/bigquery_options.py
    >>> ep.client_options()
    {'api_endpoint': 'http://127.0.0.1:9050'}
"""

from __future__ import annotations

import os
import threading
import types
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["BigQueryEndpoint", "redirect_beam_bigquery"]

BIGQUERY_EMULATOR_HOST = "BIGQUERY_EMULATOR_HOST"

_lock = threading.Lock()
_active: "BigQueryEndpoint | None" = None


@dataclass(frozen=True)
class BigQueryEndpoint:
    """Where a BigQuery emulator listens: its REST root and, for reads, its Storage Read API gRPC target."""

    rest_url: str
    storage_target: str | None = None

    def client_options(self) -> dict[str, str]:
        """For a google-cloud-bigquery Client of our own: ``Client(client_options=ep.client_options())``."""
        return {"api_endpoint": self.rest_url}


class _StorageModule(types.ModuleType):
    """Stands in for ``google.cloud.bigquery_storage_v1`` inside Beam's bigquery.py: same names, except that
    ``BigQueryReadClient()`` connects to the emulator over plaintext gRPC."""

    def __init__(self, real: types.ModuleType, target: str) -> None:
        super().__init__(real.__name__)
        self._real = real
        self._target = target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def BigQueryReadClient(self, *args: Any, **kwargs: Any):  # noqa: N802 - mirrors the class it builds
        import grpc
        from google.cloud.bigquery_storage_v1.services.big_query_read.transports import BigQueryReadGrpcTransport

        if "transport" not in kwargs:
            kwargs["transport"] = BigQueryReadGrpcTransport(channel=grpc.insecure_channel(self._target))
        return self._real.BigQueryReadClient(*args, **kwargs)


def redirect_beam_bigquery(endpoint: BigQueryEndpoint) -> Callable[[], None]:
    """Point Beam's BigQuery connectors in this process at ``endpoint``; returns a function that undoes it.

    Idempotent for the same endpoint; a different endpoint while one is active is a ValueError (one process,
    one BigQuery).
    """
    global _active
    from apache_beam.io.gcp import bigquery as beam_bigquery
    from apache_beam.io.gcp.internal.clients.bigquery import bigquery_v2_client

    with _lock:
        if _active is not None:
            if _active == endpoint:
                return lambda: None
            raise ValueError(f"Beam's BigQuery connectors already point at {_active.rest_url}; "
                             f"cannot also use {endpoint.rest_url} in the same process")
        api = bigquery_v2_client.BigqueryV2
        saved_url = api.__dict__.get("BASE_URL")
        saved_env = os.environ.get(BIGQUERY_EMULATOR_HOST)
        saved_storage = beam_bigquery.bq_storage

        api.BASE_URL = f"{endpoint.rest_url}/bigquery/v2/"
        os.environ[BIGQUERY_EMULATOR_HOST] = endpoint.rest_url
        if endpoint.storage_target:
            real = saved_storage._real if isinstance(saved_storage, _StorageModule) else saved_storage
            beam_bigquery.bq_storage = _StorageModule(real, endpoint.storage_target)
        _active = endpoint

    def undo() -> None:
        global _active
        with _lock:
            api.BASE_URL = saved_url
            if saved_env is None:
                os.environ.pop(BIGQUERY_EMULATOR_HOST, None)
            else:
                os.environ[BIGQUERY_EMULATOR_HOST] = saved_env
            beam_bigquery.bq_storage = saved_storage
            _active = None

    return undo
