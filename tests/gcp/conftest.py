"""Session fixtures: real GCS and BigQuery emulators (started once; skipped with the reason if not installed, or
failed when CHATBEAM_REQUIRE_GCP=1: CI installs them, so there a missing emulator is a failure, not a skip)."""

from __future__ import annotations

import importlib.util
import os
import sys
import uuid
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location("chatbeam_gcp_emulators", Path(__file__).with_name("emulators.py"))
emulators = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = emulators
_spec.loader.exec_module(emulators)

PROJECT = emulators.PROJECT
REQUIRE = "CHATBEAM_REQUIRE_GCP"


def unavailable(reason: str) -> None:
    """Skip the test with ``reason`` -- or fail it when CHATBEAM_REQUIRE_GCP=1 (as tests/realmodel does)."""
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def gcp_workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("gcp")


@pytest.fixture(scope="session")
def gcs_emulator(gcp_workdir):
    try:
        emu = emulators.GcsEmulator(name="gcs", log_path=gcp_workdir / "gcs.log", data_dir=gcp_workdir / "gcs")
        emu.start()
    except emulators.EmulatorUnavailable as exc:
        unavailable(str(exc))
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def bigquery_emulator(gcp_workdir, gcs_emulator):
    """bqemulator whose gs:// URIs resolve into the GCS emulator's objects (so FILE_LOADS work)."""
    try:
        emu = emulators.BigQueryEmulator(name="bigquery", log_path=gcp_workdir / "bigquery.log",
                                         gcs_local_root=gcs_emulator.objects_root)
        emu.start()
    except emulators.EmulatorUnavailable as exc:
        unavailable(str(exc))
    yield emu
    emu.stop()


@pytest.fixture(scope="session")
def gcp_env(gcp_workdir, gcs_emulator):
    """This process's environment pointed at the emulators: STORAGE_EMULATOR_HOST and placeholder ADC."""
    adc = emulators.write_placeholder_adc(gcp_workdir / "adc.json")
    with pytest.MonkeyPatch.context() as mp:
        for key, value in emulators.client_environment(gcs_emulator, None, adc).items():
            mp.setenv(key, value)
        yield emulators.client_environment(gcs_emulator, None, adc)


@pytest.fixture(scope="module")
def bq_endpoint(bigquery_emulator, gcp_env):
    """The emulator as a BigQueryEndpoint, with Beam's connectors redirected to it for the module."""
    from transforms.bigquery_endpoint import BigQueryEndpoint, redirect_beam_bigquery

    endpoint = BigQueryEndpoint(bigquery_emulator.rest_url, bigquery_emulator.grpc_target)
    undo = redirect_beam_bigquery(endpoint)
    yield endpoint
    undo()


@pytest.fixture(scope="module")
def bq_client(bq_endpoint):
    """A google-cloud-bigquery client on the emulator, for setting up and checking tables."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(project=PROJECT, credentials=AnonymousCredentials(),
                           client_options=bq_endpoint.client_options())


@pytest.fixture(scope="module")
def dataset(bq_client):
    """A fresh dataset on the BigQuery emulator for one test module (its name)."""
    name = f"chatbeam_{uuid.uuid4().hex[:8]}"
    bq_client.create_dataset(f"{PROJECT}.{name}")
    return name


@pytest.fixture(scope="session")
def gcs_client(gcp_env):
    from google.cloud import storage

    return storage.Client(project=PROJECT)
