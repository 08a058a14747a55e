"""What Dataflow gets: the sdist built from setup.py (as Beam's stager builds it for --setup_file), the Flex
Template's metadata.json, Dockerfile and launcher entry point. Nothing here reaches Google; see docs/nightly.md
for what could not be run."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
from importlib.metadata import version
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.nightly import normalize_argv
from pipelines.options import ChatbeamOptions, validate

ROOT = Path(__file__).resolve().parents[2]
DATAFLOW = ROOT / "dataflow"
PACKAGES = ("pipelines", "transforms", "schemas", "client", "emulator")
JUNK = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".pytest_cache", ".hypothesis", "*.egg-info", "build",
                              "dist", "out", ".venv*", "tests", "bench")


@pytest.fixture(scope="module")
def sdist_names(tmp_path_factory) -> set[str]:
    """Build the sdist exactly as Beam's stager does for --setup_file, from a clean copy of the repository."""
    from apache_beam.runners.portability.stager import Stager

    src = tmp_path_factory.mktemp("src") / "chatbeam"
    shutil.copytree(ROOT, src, ignore=JUNK)
    dist = tmp_path_factory.mktemp("dist")
    tarball = Stager._build_setup_package(str(src / "setup.py"), str(dist))
    with tarfile.open(tarball) as tar:
        return {name.split("/", 1)[1] for name in tar.getnames() if "/" in name}


def test_sdist_holds_every_module_and_data_file(sdist_names):
    wanted = {str(path.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("*")
              if path.suffix in (".py", ".json") and "__pycache__" not in path.parts}
    assert "client/prices.json" in wanted and "pipelines/nightly.py" in wanted
    assert wanted - sdist_names == set()
    assert {"setup.py", "pyproject.toml", "README.md"} <= sdist_names


# ----------------------------------------------------------------------------------------------- metadata.json

def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    ChatbeamOptions._add_argparse_args(parser)
    return parser


def _metadata() -> dict:
    return json.loads((DATAFLOW / "metadata.json").read_text())


def _option_names() -> dict[str, argparse.Action]:
    names = {}
    for action in _parser()._actions:
        for option in action.option_strings:
            names[option.removeprefix("--")] = action
    names["dry_run"] = names["chatbeam_dry_run"]  # written --dry_run (pipelines/nightly.normalize_argv)
    return names


def test_metadata_parameters_are_options_the_job_knows():
    meta = _metadata()
    assert meta["name"] and meta["description"] and meta["streaming"] is False
    options = _option_names()
    params = meta["parameters"]
    assert len({p["name"] for p in params}) == len(params)
    for param in params:
        assert {"name", "label", "helpText"} <= param.keys(), param
        assert param["name"] in options, f"{param['name']} is not an option of the job"
        for regex in param.get("regexes", []):
            re.compile(regex)
        action = options[param["name"]]
        if isinstance(action, argparse._StoreTrueAction):
            assert param.get("regexes") == ["^(true|false)$"], param["name"]
        elif action.type in (int, float):
            assert param.get("regexes"), f"{param['name']} is numeric: give it a regex"
    assert [p["name"] for p in params if not p.get("isOptional")] == ["output"]
    run_date = next(p for p in params if p["name"] == "run_date")["regexes"][0]
    assert re.match(run_date, "2025-01-31") and not re.match(run_date, "2025-1-31")


def test_a_launch_with_template_parameters_parses_into_the_nightly_plan():
    sys.path.insert(0, str(DATAFLOW))
    try:
        from launch import launcher_argv
    finally:
        sys.path.remove(str(DATAFLOW))
    # What the launcher passes: Dataflow's options plus every parameter as --name=value.
    argv = ["--project=acme", "--region=us-central1", "--temp_location=gs://b/tmp", "--setup_file=/template/setup.py",
            "--input=gs://b/in/{run_date}/*.jsonl", "--output=gs://b/out/{run_date}/results",
            "--errors=gs://b/out/{run_date}/errors", "--run_date=2025-01-31", "--resume=true", "--dry_run=false",
            "--max_cost_usd=25", "--model=google/gemini-2.5-flash", "--vertex_location=global"]
    plan = validate(PipelineOptions(normalize_argv(launcher_argv(argv))))
    n = plan.nightly
    assert (plan.input, plan.output) == ("gs://b/in/2025-01-31/*.jsonl", "gs://b/out/2025-01-31/results")
    assert (n.resume, n.dry_run, n.max_cost_usd, n.checkpoint_dir) == (
        True, False, 25.0, "gs://b/out/2025-01-31/results-checkpoint")
    assert plan.client.target.base_url == (
        "https://aiplatform.googleapis.com/v1/projects/acme/locations/global/endpoints/openapi")


# --------------------------------------------------------------------------------------------------- Dockerfile

def _dockerfile() -> list[str]:
    return [line.strip() for line in (DATAFLOW / "Dockerfile").read_text().splitlines()
            if line.strip() and not line.strip().startswith("#")]


def test_dockerfile_is_on_the_python311_launcher_image_and_copies_files_that_exist():
    lines = _dockerfile()
    assert lines[0] == "FROM gcr.io/dataflow-templates-base/python311-template-launcher-base"
    copied = []
    for line in lines:
        if line.startswith("COPY "):
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (ROOT / source).exists(), f"Dockerfile copies {source}, which does not exist"
                copied.append(source)
    assert set(PACKAGES) <= set(copied)
    env = dict(re.findall(r'ENV (\w+)="\$\{WORKDIR\}/([^"]+)"', "\n".join(lines)))
    assert env["FLEX_TEMPLATE_PYTHON_PY_FILE"] == "dataflow/launch.py"
    assert env["FLEX_TEMPLATE_PYTHON_SETUP_FILE"] == "setup.py"
    assert all(any(Path(value).is_relative_to(c) or value == c for c in copied) for value in env.values())
    assert "pyproject.toml" in copied and "README.md" in copied  # setup.py's metadata lives there


def test_requirements_pin_the_beam_the_tests_run_and_cloudbuild_builds_this_dockerfile():
    pins = dict(line.split("==") for line in (DATAFLOW / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    assert pins["apache-beam[gcp]"] == version("apache-beam")
    assert '"-f", "dataflow/Dockerfile"' in (DATAFLOW / "cloudbuild.yaml").read_text()


@pytest.mark.e2e
def test_the_launcher_entry_point_runs_a_dry_run_from_template_style_arguments(vertex_emulator, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": f"q{i}", "prompt": f"question {i}"}) + "\n" for i in range(5)))
    proc = subprocess.run(
        [sys.executable, str(DATAFLOW / "launch.py"), f"--input={src}", f"--output={tmp_path}/{{run_date}}/results",
         "--run_date=2025-01-31", "--dry_run=true", "--resume=false", f"--emulator_url={vertex_emulator.url}"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len((tmp_path / "2025-01-31" / "results-dry-run-00000.jsonl").read_text().splitlines()) == 5
    assert vertex_emulator.stats(fingerprints=False)["requests"] == 0
