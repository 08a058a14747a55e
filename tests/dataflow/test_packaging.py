"""What Dataflow and pip users get: the sdist built from setup.py (as Beam's stager builds it for --setup_file), the
wheel (as ``pip install`` builds it) with every data file the code reads at runtime, the declared dependencies, the
Flex Template's metadata.json, Dockerfile and launcher entry point. Nothing here reaches Google (the wheel build
fetches its build backend from the package index, as any ``pip install .`` does); see docs/nightly.md for what
could not be run."""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from importlib.metadata import packages_distributions, version
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.nightly import normalize_argv
from pipelines.options import ChatbeamOptions, validate

ROOT = Path(__file__).resolve().parents[2]
DATAFLOW = ROOT / "dataflow"
PACKAGES = ("pipelines", "transforms", "schemas", "client", "emulator", "report")
# Read at runtime by the code (client/pricing.py: the bundled price table). A new data file goes here, in
# pyproject.toml's package-data, and the wheel test below proves it ships.
RUNTIME_DATA = {"client/prices.json"}
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


def _package_files(*, data: bool) -> set[str]:
    return {str(path.relative_to(ROOT)) for package in PACKAGES for path in (ROOT / package).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts and (path.suffix != ".py") == data
            and path.suffix != ".pyc"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> zipfile.ZipFile:
    """The wheel ``pip install .`` would build, from a clean copy of the repository."""
    src = tmp_path_factory.mktemp("wsrc") / "chatbeam"
    shutil.copytree(ROOT, src, ignore=JUNK)
    dist = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q", "-w", str(dist)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (path,) = dist.glob("chatbeam-*.whl")
    return zipfile.ZipFile(path)


def test_wheel_holds_every_module_and_every_runtime_data_file(wheel):
    names = set(wheel.namelist())
    assert RUNTIME_DATA <= _package_files(data=True)  # the list names files that exist
    assert _package_files(data=True) == RUNTIME_DATA, "a new data file in a package: add it to RUNTIME_DATA"
    assert RUNTIME_DATA - names == set()
    assert _package_files(data=False) - names == set()
    assert "chatbeam = pipelines.cli:main" in wheel.read("chatbeam-0.1.0.dist-info/entry_points.txt").decode()


def test_package_data_globs_name_files_that_exist():
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    for package, globs in package_data.items():
        for glob in globs:
            assert list((ROOT / package).glob(glob)), f"package-data {package}: {glob!r} matches no file"


def _imported_distributions() -> dict[str, str]:
    """Third-party distributions the product code imports unconditionally (an import inside ``try: ... except
    ImportError`` is optional), each with one module that imports it. ``google.*`` is a namespace shared by several
    distributions (google-auth, google-genai, the Cloud clients apache-beam[gcp] brings), so it is left out."""
    found: dict[str, str] = {}
    local = set(PACKAGES)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            tree = ast.parse(path.read_text())
            optional = {id(node) for t in ast.walk(tree) if isinstance(t, ast.Try)
                        and any("ImportError" in ast.unparse(h.type or ast.Name("")) for h in t.handlers)
                        for node in ast.walk(t)}
            for node in ast.walk(tree):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    modules = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules = [node.module]
                else:
                    continue
                for module in modules:
                    top = module.split(".")[0]
                    if top in sys.stdlib_module_names or top in local or top == "google":
                        continue
                    for dist in packages_distributions().get(top, [top]):
                        found.setdefault(dist.lower().replace("_", "-"), str(path.relative_to(ROOT)))
    return found


# Imported directly but declared through the distribution that pins them: declaring them too would fight that pin.
PROVIDED = {"pydantic-core": "pydantic", "grpcio": "apache-beam[gcp]"}


def test_every_imported_distribution_is_declared():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0].lower() for dep in project["dependencies"]}
    missing = {dist: where for dist, where in _imported_distributions().items()
               if dist not in declared and dist not in PROVIDED}
    assert missing == {}, f"imported but not declared in pyproject.toml dependencies: {missing}"
    assert {"httpx2", "httpx"} <= declared
    tests_only = {re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0].lower()
                  for dep in project["optional-dependencies"]["test"]}
    assert "httpx" not in tests_only  # a runtime dependency (client/batch_jobs.py), not a test-only one


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


def test_the_launcher_image_pins_every_runtime_dependency_at_the_tested_version():
    """The Dockerfile installs chatbeam with --no-deps: a dependency missing from requirements.txt is an ImportError
    when the launcher imports the job (orjson and numpy through report/, for instance)."""
    pins = dict(line.split("==") for line in (DATAFLOW / "requirements.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    pinned = {name.split("[")[0].lower(): v for name, v in pins.items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in project["dependencies"]:
        name = re.split(r"[\[<>=!~; ]", dep, maxsplit=1)[0].lower()
        assert name in pinned, f"{name} is a dependency of chatbeam but not in dataflow/requirements.txt"
        assert pinned[name] == version(name), f"{name}: requirements.txt pins {pinned[name]}, tests run {version(name)}"


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
