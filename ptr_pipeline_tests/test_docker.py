"""The Docker image's requirements resolve against the package index (the image is not built here:
this machine has no Docker daemon, but a pin that does not exist fails just the same)."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def _pip_install_requirements(dockerfile: Path) -> list[str]:
    """The requirement arguments of every `pip install` in the Dockerfile's RUN lines."""
    text = dockerfile.read_text().replace("\\\n", " ")
    requirements = []
    for line in text.splitlines():
        if not line.startswith("RUN") or "pip install" not in line:
            continue
        words = shlex.split(line.split("pip install", 1)[1].split("&&")[0])
        takes_value = {"--extra-index-url", "--index-url", "-i", "-c", "-r", "--find-links", "-f"}
        skip = False
        for word in words:
            if skip:
                skip = False
            elif word in takes_value:
                skip = True
            elif word == "-e" or word.startswith("-"):
                continue
            else:
                requirements.append(
                    word.replace(".[", f"{REPO}[", 1) if word.startswith(".") else word
                )
    return requirements


def test_the_image_installs_the_postgres_storage_its_instance_uses():
    requirements = _pip_install_requirements(REPO / "docker" / "Dockerfile")
    instance = yaml.safe_load((REPO / "docker" / "dagster.yaml").read_text())
    assert "postgres" in instance["storage"]
    assert requirements == [f"{REPO}[postgres]"]  # the project's own pins, plus its postgres extra


@pytest.mark.slow
def test_the_image_requirements_resolve_against_the_index(tmp_path):
    requirements = _pip_install_requirements(REPO / "docker" / "Dockerfile")
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", str(report), *requirements],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    versions = {
        i["metadata"]["name"].lower(): i["metadata"]["version"]
        for i in json.loads(report.read_text())["install"]
    }
    import dagster

    assert versions["dagster"] == dagster.__version__  # the image runs the version the tests ran
    assert versions["dagster-postgres"] and versions["dagster-webserver"] == dagster.__version__
    assert versions["torch"].startswith("2.13.0")
