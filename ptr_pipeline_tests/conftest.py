"""Shared fixtures: tiny models built locally once per session, and auto-skips for gpu/vllm tests."""

import importlib.util
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # torch on 2 threads is 10-50x slower under load
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pyarrow as pa
import pytest

from ptr_pipeline import schemas
from ptr_pipeline.home import Home

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_collection_modifyitems(config, items):
    import torch

    has_cuda = torch.cuda.is_available()
    has_vllm = importlib.util.find_spec("vllm") is not None
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU"))
        if "vllm" in item.keywords and not has_vllm:
            item.add_marker(pytest.mark.skip(reason="needs the vllm extra"))


@pytest.fixture(scope="session")
def models_home(tmp_path_factory) -> Home:
    """A Home whose models/ folder holds the three tiny models (built once per session)."""
    home = Home(tmp_path_factory.mktemp("ptr_models"))
    for name in ("weak", "base", "strong"):
        home.resolve_model(f"tiny:{name}")
    return home


@pytest.fixture
def home(models_home, tmp_path) -> Home:
    """A fresh Home per test that shares the session's tiny models (via a symlink)."""
    (tmp_path / "ptr").mkdir()
    (tmp_path / "ptr" / "models").symlink_to(models_home.models)
    return Home(tmp_path / "ptr")


@pytest.fixture(scope="session")
def chat_format(models_home):
    from ptr_pipeline.conversation import ChatFormat

    return ChatFormat.from_pretrained(models_home.resolve_model("tiny:base"))


@pytest.fixture(scope="session")
def tokenizer(chat_format):
    return chat_format.tokenizer


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"shared sample data not found at {SHARED_DATA}")
    return SHARED_DATA


def make_queries(texts: list[str]) -> pa.Table:
    return pa.Table.from_pylist(
        [{"query_id": f"q{i}", "query": t, "source": "test"} for i, t in enumerate(texts)],
        schema=schemas.QUERY_POOL,
    )


@pytest.fixture(scope="session")
def world_models(tmp_path_factory) -> dict:
    """The miniature world's weak, base and strong models, pretrained once per session (about
    5.5 minutes; the build pins torch to the recipe's 2 threads whatever OMP_NUM_THREADS says,
    so the tests check the demo's models): role -> checkpoint folder."""
    from ptr_pipeline.world import WorldRecipe, build_world_models

    return build_world_models(tmp_path_factory.mktemp("world"), WorldRecipe())
