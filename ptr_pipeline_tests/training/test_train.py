"""DeepSpeed training in a subprocess on CPU: the checkpoint loads, generates, and changed."""

import json

import pyarrow as pa
import pytest
import torch

from ptr_pipeline import schemas
from ptr_pipeline.storage import file_sha256
from ptr_pipeline.training import (
    TrainingFailed,
    TrainSettings,
    deepspeed_config,
    train_in_subprocess,
)


def _dataset(n: int = 8) -> pa.Table:
    rows = [
        {
            "query_id": str(i),
            "query": f"What is {i} plus {i}?",
            "thoughts": [f"maybe {i}"],
            "answer": f"The answer is {2 * i}.",
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=schemas.PTR_DATASET)


def test_deepspeed_config_follows_settings():
    config = deepspeed_config(
        TrainSettings(zero_stage=3, offload_optimizer=True, warmup_steps=5, precision="bf16")
    )
    assert config["zero_optimization"] == {
        "stage": 3,
        "stage3_gather_16bit_weights_on_model_save": True,
        "offload_optimizer": {"device": "cpu"},
    }
    assert config["optimizer"]["params"]["torch_adam"] is True
    assert config["scheduler"]["params"]["warmup_num_steps"] == 5 and config["bf16"]["enabled"]
    with pytest.raises(ValueError, match="offload_optimizer needs zero_stage >= 1"):
        TrainSettings(offload_optimizer=True)


@pytest.fixture(scope="module")
def runs(models_home, tmp_path_factory) -> dict:
    """Three optimizer steps under ZeRO 0 and ZeRO 3, same data and seed."""
    out = {}
    for stage in (0, 3):
        folder = tmp_path_factory.mktemp(f"zero{stage}")
        settings = TrainSettings(
            zero_stage=stage, max_steps=3, micro_batch_size=2, learning_rate=1e-2
        )
        lines: list[str] = []
        manifest = train_in_subprocess(
            _dataset(),
            settings,
            models_home.resolve_model("tiny:base"),
            folder / "ckpt",
            folder / "work",
            on_line=lines.append,
        )
        out[stage] = (folder / "ckpt", manifest, lines)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 3])
def test_train_writes_a_loadable_changed_checkpoint(models_home, runs, zero_stage):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    checkpoint, manifest, lines = runs[zero_stage]
    assert any(line.startswith("step 3/3 loss") for line in lines)
    summary = manifest["summary"]
    assert summary["steps"] == 3 and len(summary["loss_curve"]) == 3 and summary["examples"] == 8
    assert manifest["deepspeed_config"]["zero_optimization"]["stage"] == zero_stage
    for name, entry in manifest["files"].items():
        assert file_sha256(checkpoint / name) == entry["sha256"]
    assert "model.safetensors" in manifest["files"]

    tuned = AutoModelForCausalLM.from_pretrained(checkpoint)
    original = AutoModelForCausalLM.from_pretrained(models_home.resolve_model("tiny:base"))
    tuned_params = dict(tuned.named_parameters())
    changed = [n for n, p in original.named_parameters() if not torch.equal(p, tuned_params[n])]
    assert len(changed) == len(tuned_params)  # every trainable parameter moved
    tokenizer = AutoTokenizer.from_pretrained(checkpoint)
    enc = tokenizer(
        ["<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n"],
        return_tensors="pt",
        add_special_tokens=False,
    )
    out = tuned.generate(
        **enc, max_new_tokens=5, do_sample=False, pad_token_id=tokenizer.pad_token_id
    )
    assert out.shape[1] > enc["input_ids"].shape[1]


@pytest.mark.slow
def test_zero_3_trains_like_zero_0(runs):
    """Sharding changes where state lives, not the maths: same losses, same weights."""
    from safetensors.torch import load_file

    curves = [runs[stage][1]["summary"]["loss_curve"] for stage in (0, 3)]
    assert curves[1] == pytest.approx(curves[0], rel=1e-4)
    weights = [load_file(runs[stage][0] / "model.safetensors") for stage in (0, 3)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name].float(), tensor.float(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_failure_reports_the_process_output(home, tmp_path):
    settings = TrainSettings(max_seq_len=16)  # every example is too long
    with pytest.raises(TrainingFailed, match="no training example fits max_seq_len=16"):
        train_in_subprocess(
            _dataset(2), settings, home.resolve_model("tiny:base"), tmp_path / "c", tmp_path / "w"
        )
    assert json.loads((tmp_path / "w" / "job.json").read_text())["settings"]["max_seq_len"] == 16


def test_launch_command_one_rank_and_several(tmp_path):
    import sys

    from ptr_pipeline.training.launch import command, environment

    one = command(TrainSettings(), tmp_path / "job.json")
    assert one == [
        sys.executable,
        "-m",
        "ptr_pipeline.training.train",
        "--job",
        str(tmp_path / "job.json"),
    ]
    env = environment(TrainSettings(), "cpu")
    assert env["DS_ACCELERATOR"] == "cpu" and (
        env["RANK"],
        env["WORLD_SIZE"],
        env["LOCAL_RANK"],
    ) == ("0", "1", "0")
    several = command(TrainSettings(num_gpus=4), tmp_path / "job.json")
    assert several[:5] == [sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "4"]
    assert several[-4:] == [
        "--module",
        "ptr_pipeline.training.train",
        "--job",
        str(tmp_path / "job.json"),
    ]
    assert "RANK" not in environment(TrainSettings(num_gpus=4), "cuda")  # the launcher sets ranks


@pytest.mark.slow
def test_two_ranks_through_the_deepspeed_launcher(models_home, tmp_path):
    """num_gpus > 1 goes through DeepSpeed's launcher; on CPU each rank is a gloo process."""
    settings = TrainSettings(num_gpus=2, max_steps=2, micro_batch_size=2)
    lines: list[str] = []
    manifest = train_in_subprocess(
        _dataset(),
        settings,
        models_home.resolve_model("tiny:base"),
        tmp_path / "ckpt",
        tmp_path / "work",
        on_line=lines.append,
    )
    assert manifest["summary"]["world_size"] == 2 and manifest["summary"]["steps"] == 2
    assert any("dist_world_size=2" in line for line in lines)
    assert (tmp_path / "ckpt" / "model.safetensors").exists()
