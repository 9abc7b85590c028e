"""Model settings resolved into ``MODEL_REF`` rows: tiny names, folders and hub ids (the world's
own settings are the world's: ``defs/test_models.py``)."""

import hashlib

import pytest

from ptr_pipeline import schemas
from ptr_pipeline.models import model_fingerprint, model_ref, resolve_model_ref


def _row(table) -> dict:
    assert table.schema == schemas.MODEL_REF and table.num_rows == 1
    return table.to_pylist()[0]


def test_a_tiny_name_resolves_to_its_built_folder(models_home):
    row = _row(resolve_model_ref("weak", "tiny:weak", models_home.models))
    assert row["model"] == models_home.resolve_model("tiny:weak")
    assert row["revision"] == "tiny" and row["fingerprint"] == model_fingerprint(row["model"])
    assert row["role"] == "weak" and row["spec"] == "tiny:weak"


def test_a_folder_is_its_own_revision(models_home, tmp_path):
    folder = models_home.resolve_model("tiny:base")
    row = _row(resolve_model_ref("base", folder, tmp_path))
    assert row["model"] == folder
    assert row["revision"] == row["fingerprint"][:16] == model_fingerprint(folder)[:16]


def test_a_hub_id_is_resolved_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))  # empty
    row = _row(resolve_model_ref("strong", "Qwen/Qwen2-7B", tmp_path))
    assert row["model"] == "Qwen/Qwen2-7B"
    assert row["fingerprint"] == hashlib.sha256(b"hub:Qwen/Qwen2-7B").hexdigest()
    assert row["revision"] == "not in the local cache (resolved when loaded)"
    assert _row(resolve_model_ref("strong", "not a//repo id", tmp_path))["revision"] == "unresolved"
    # a model in the cache: its revision is the cached commit
    repo = tmp_path / "hub" / "models--Qwen--Qwen2-7B"
    (repo / "snapshots" / "0123abcd").mkdir(parents=True)
    (repo / "snapshots" / "0123abcd" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    assert _row(resolve_model_ref("strong", "Qwen/Qwen2-7B", tmp_path))["revision"] == "0123abcd"


def test_a_missing_folder_and_a_world_setting_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        resolve_model_ref("base", "./no/such/folder", tmp_path)
    with pytest.raises(ValueError, match=r"ptr_pipeline\.world"):
        resolve_model_ref("base", "world:base", tmp_path)


def test_an_empty_revision_falls_back_to_the_fingerprint(models_home):
    folder = models_home.resolve_model("tiny:strong")
    assert _row(model_ref("x", "s", folder, None))["revision"] == model_fingerprint(folder)[:16]
    assert _row(model_ref("x", "s", folder, "abc"))["revision"] == "abc"
