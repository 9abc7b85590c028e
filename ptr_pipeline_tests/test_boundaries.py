"""Import boundaries: the core never imports Dagster; stages meet through tables; loading the code
location stays light."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _imported(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


@pytest.mark.parametrize(
    "package",
    [
        "queries",
        "generation",
        "filtering",
        "training",
        "evaluation",
        "storage",
        "models",
        "home",
        "schemas",
        "conversation",
        "engines",
        "records",
    ],
)
def test_core_does_not_import_dagster(package):
    assert "dagster" not in _imported(f"import ptr_pipeline.{package}")


def test_loading_definitions_imports_no_heavy_ml_library():
    modules = _imported("from ptr_pipeline.definitions import defs")
    assert "dagster" in modules
    for heavy in ("torch", "deepspeed", "vllm", "transformers"):
        assert heavy not in modules, heavy


def test_import_contracts_hold():
    """The import-linter contracts in pyproject.toml (also run by `make lint`)."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert "0 broken" in proc.stdout
