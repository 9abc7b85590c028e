"""DeepSpeed training in a subprocess on CPU: invariants of the objective, caching, failures."""

import json
import shutil
from collections import deque

import pyarrow as pa
import pytest
import torch

from ptr_pipeline import schemas
from ptr_pipeline.conversation import GENERIC_REFINE_TURN, ChatFormat
from ptr_pipeline.models import default_refine_turn
from ptr_pipeline.storage import checkpoint_problems, file_sha256
from ptr_pipeline.training import (
    TrainingFailed,
    TrainSettings,
    deepspeed_config,
    train_in_subprocess,
)
from ptr_pipeline.training.launch import _failure, command, console_line, environment
from ptr_pipeline.training.loss import weighted_thought_loss
from ptr_pipeline.training.tokenize import collate, encode_dataset, step_plan

LONG = "Add the tens, then the ones, then carry: the sum of these numbers is four in the end. " * 3


def _dataset(n: int = 8) -> pa.Table:
    rows = [
        {
            "query_id": str(i),
            "query": f"What is {i} plus {i}?",
            "thoughts": [f"maybe {i}"],
            "answer": f"The answer is {2 * i}.",
            "origin": "ptr",
            "refine_turn": GENERIC_REFINE_TURN,
        }
        for i in range(n)
    ]
    return pa.Table.from_pylist(rows, schema=schemas.PTR_DATASET)


def _two_rows() -> pa.Table:
    """A long answer and a 4-token answer: a per-micro-batch mean would weigh them alike."""
    rows = [
        {
            "query_id": "long",
            "query": "What is 2 + 2?",
            "thoughts": [],
            "answer": LONG,
            "origin": "ptr",
            "refine_turn": GENERIC_REFINE_TURN,
        },
        {
            "query_id": "short",
            "query": "What is 2 + 2?",
            "thoughts": [],
            "answer": "4.",
            "origin": "ptr",
            "refine_turn": GENERIC_REFINE_TURN,
        },
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


def _train(models_home, folder, dataset, **settings):
    lines: list[str] = []
    result = train_in_subprocess(
        dataset,
        TrainSettings(**settings),
        models_home.resolve_model("tiny:base"),
        folder,
        on_line=lines.append,
    )
    return result, lines


@pytest.fixture(scope="module")
def cuts(models_home, tmp_path_factory) -> dict:
    """Two optimizer steps on the same two rows, cut three ways into micro-batches and ranks."""
    out = {}
    for name, settings in {
        "micro2": {"micro_batch_size": 2},
        "accumulate2": {"micro_batch_size": 1, "gradient_accumulation_steps": 2},
        "ranks2": {"micro_batch_size": 1, "num_gpus": 2},
        "unpacked": {"micro_batch_size": 2, "packing": False},
        "ptr3_answer_only": {"micro_batch_size": 2, "loss": "ptr3", "ptr3_lambdas": [1, 0, 0]},
    }.items():
        folder = tmp_path_factory.mktemp(name)
        out[name] = _train(
            models_home, folder, _two_rows(), max_steps=2, learning_rate=1e-2, **settings
        )
    return out


@pytest.mark.slow
def test_the_objective_does_not_depend_on_how_a_step_is_cut(models_home, chat_format, cuts):
    """micro 2 x acc 1 = micro 1 x acc 2 = 2 ranks x micro 1 = micro 2 unpacked: same losses, same
    weights after two steps, and the first loss is sum(w * ce) / sum(w) over the step's tokens,
    computed here directly. (Normalised per micro-batch instead, "4." would carry half the objective.)"""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    curves = {name: r.manifest["summary"]["loss_curve"] for name, (r, _) in cuts.items()}
    examples = encode_dataset(_two_rows(), chat_format, TrainSettings()).examples
    batch = collate([_encoded(r) for r in examples.to_pylist()], 0)
    model = AutoModelForCausalLM.from_pretrained(models_home.resolve_model("tiny:base"))
    with torch.no_grad():
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    expected = weighted_thought_loss(logits, batch.labels, batch.loss_weights).item()
    for name, curve in curves.items():
        assert curve[0] == pytest.approx(expected, rel=1e-5), name
        assert curve[1] == pytest.approx(curves["micro2"][1], rel=1e-5), name
    assert cuts["ranks2"][0].manifest["summary"]["world_size"] == 2
    assert any("dist_world_size=2" in line for line in cuts["ranks2"][1])
    weights = {n: load_file(r.checkpoint / "model.safetensors") for n, (r, _) in cuts.items()}
    # Adam's first steps move each weight by about the learning rate (1e-2) whatever the gradient's
    # size, so float noise in a near-zero gradient can move one weight by ~1e-4; a different
    # objective would move many weights by up to 2e-2.
    for name in ("accumulate2", "ranks2", "unpacked"):
        for key, tensor in weights["micro2"].items():
            torch.testing.assert_close(weights[name][key], tensor, rtol=0, atol=5e-4)
    # The paper's loss with lambda = (1, 0, 0) is the answer loss: the same run, bit for bit.
    assert curves["ptr3_answer_only"] == curves["micro2"]
    for key, tensor in weights["micro2"].items():
        assert torch.equal(weights["ptr3_answer_only"][key], tensor), key


def _encoded(row: dict):
    from ptr_pipeline.conversation import Encoded

    return Encoded(**row)


@pytest.fixture(scope="module")
def runs(models_home, tmp_path_factory) -> dict:
    """Three optimizer steps under ZeRO 0 and ZeRO 3, same data and seed."""
    out = {}
    for stage in (0, 3):
        folder = tmp_path_factory.mktemp(f"zero{stage}")
        out[stage] = _train(
            models_home, folder, _dataset(), zero_stage=stage, max_steps=3,
            micro_batch_size=2, learning_rate=1e-2, peak_tflops=0.5,
        )  # fmt: skip
    return out


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 3])
def test_train_writes_a_loadable_changed_checkpoint(models_home, runs, zero_stage):
    from transformers import AutoModelForCausalLM

    result, lines = runs[zero_stage]
    checkpoint, manifest = result.checkpoint, result.manifest
    assert any(line.startswith("step 3/3 loss") for line in lines)
    assert not [line for line in lines if "built successfully" in line]  # DeepSpeed's op notice
    summary = manifest["summary"]
    assert summary["steps"] == 3 and len(summary["loss_curve"]) == 3 and summary["examples"] == 8
    assert manifest["deepspeed_config"]["zero_optimization"]["stage"] == zero_stage
    # what the weights depend on besides the inputs: the CPU's kernels (the tests' 1 thread)
    assert manifest["machine"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert manifest["machine"]["torch_threads"] == 1 and manifest["machine"]["cpu"]
    for name, entry in manifest["files"].items():
        assert file_sha256(checkpoint / name) == entry["sha256"]
    assert "model.safetensors" in manifest["files"]
    # the turn the rows were made with: evaluation and `refine` ask with it by default
    assert manifest["refine_turn"] == GENERIC_REFINE_TURN
    assert default_refine_turn(str(checkpoint))[0] == GENERIC_REFINE_TURN

    tuned = AutoModelForCausalLM.from_pretrained(checkpoint)
    original = AutoModelForCausalLM.from_pretrained(models_home.resolve_model("tiny:base"))
    tuned_params = dict(tuned.named_parameters())
    changed = [n for n, p in original.named_parameters() if not torch.equal(p, tuned_params[n])]
    assert len(changed) == len(tuned_params)  # every trainable parameter moved
    fmt = ChatFormat.from_pretrained(str(checkpoint))
    ids = torch.tensor([fmt.prompt_ids([{"role": "user", "content": "What is 2 plus 2?"}])])
    out = tuned.generate(
        ids, max_new_tokens=5, do_sample=False, eos_token_id=list(fmt.stop_token_ids)
    )
    assert out.shape[1] > ids.shape[1]


@pytest.mark.slow
@pytest.mark.parametrize("zero_stage", [0, 3])
def test_the_manifest_reports_model_flops_and_mfu(models_home, runs, zero_stage):
    """6N + 12 L d T per token (N counted here on the unpartitioned model, so ZeRO-3's
    partitioning must not change it), and MFU = that x tokens/s / peak."""
    from transformers import AutoModelForCausalLM

    summary = runs[zero_stage][0].manifest["summary"]
    model = AutoModelForCausalLM.from_pretrained(models_home.resolve_model("tiny:base"))
    n = sum(p.numel() for p in model.parameters())  # tied: the embedding is the LM head
    lengths = [len(e) for e in encode_dataset(_dataset(), ChatFormat.from_pretrained(
        models_home.resolve_model("tiny:base")), TrainSettings()).examples["input_ids"].to_pylist()]  # fmt: skip
    mean = sum(lengths) / len(lengths)
    expected = 6 * n + 12 * model.config.num_hidden_layers * model.config.hidden_size * mean
    assert summary["model_flops_per_token"] == pytest.approx(expected)
    settings = TrainSettings(max_steps=3, micro_batch_size=2)
    trained = [i for plan in step_plan(8, settings, 1) for i in plan[0][0]]
    assert len(trained) == 6 and summary["trained_tokens"] == sum(lengths[i] for i in trained)
    mfu = summary["model_flops_per_token"] * summary["tokens_per_s"] / 0.5e12
    assert summary["mfu"] == pytest.approx(mfu, rel=1e-3) and 0 < summary["mfu"] < 1


@pytest.mark.slow
def test_zero_3_trains_like_zero_0(runs):
    """Sharding changes where state lives, not the maths: same losses, same weights."""
    from safetensors.torch import load_file

    curves = [runs[stage][0].manifest["summary"]["loss_curve"] for stage in (0, 3)]
    assert curves[1] == pytest.approx(curves[0], rel=1e-4)
    weights = [load_file(runs[stage][0].checkpoint / "model.safetensors") for stage in (0, 3)]
    assert weights[0].keys() == weights[1].keys()
    for name, tensor in weights[0].items():
        torch.testing.assert_close(weights[1][name].float(), tensor.float(), rtol=1e-3, atol=1e-4)


@pytest.mark.slow
def test_unchanged_inputs_reuse_the_checkpoint_and_staging_is_cleaned(models_home, runs):
    result, _ = runs[0]
    work = result.checkpoint.parent
    assert not list(work.glob(".staging-*"))  # removed after success
    again, lines = _train(
        models_home, work, _dataset(), zero_stage=0, max_steps=3, micro_batch_size=2,
        learning_rate=1e-2, peak_tflops=0.5,
    )  # fmt: skip
    assert again.cached and lines == [] and again.checkpoint == result.checkpoint
    assert again.manifest == result.manifest
    # A reporting setting is not a reason to train again: the reused manifest gets the new MFU.
    peak1, _ = _train(
        models_home, work, _dataset(), zero_stage=0, max_steps=3, micro_batch_size=2,
        learning_rate=1e-2, peak_tflops=1.0,
    )  # fmt: skip
    assert peak1.cached and peak1.manifest["settings"]["peak_tflops"] == 1.0
    assert peak1.manifest["summary"]["mfu"] == pytest.approx(
        result.manifest["summary"]["mfu"] / 2, rel=1e-3
    )
    assert json.loads((work / result.checkpoint.name / "ptr_manifest.json").read_text()) == (
        peak1.manifest
    )
    # A failed attempt at other inputs leaves its staging folder; the next success removes it.
    (work / ".staging-0123456789abcdef" / "checkpoints").mkdir(parents=True)
    (work / ".0123456789abcdef.lock").touch()
    # A damaged cache (same size, one byte flipped) is not reused: it is trained again.
    with (result.checkpoint / "model.safetensors").open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))
    retrained, lines = _train(
        models_home, work, _dataset(), zero_stage=0, max_steps=3, micro_batch_size=2,
        learning_rate=1e-2, peak_tflops=0.5,
    )  # fmt: skip
    assert not retrained.cached and any(line.startswith("step 3/3") for line in lines)
    assert checkpoint_problems(retrained.checkpoint) == []
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]  # nor lock files


@pytest.mark.slow
def test_a_failing_rank_reports_its_own_error_and_keeps_its_staging(models_home, tmp_path):
    model = tmp_path / "broken-model"
    shutil.copytree(models_home.resolve_model("tiny:base"), model)
    (model / "model.safetensors").write_bytes(b"not safetensors")  # the tokenizer still loads
    with pytest.raises(TrainingFailed, match=r"training failed on rank 0: \w+Error"):
        train_in_subprocess(
            _dataset(4), TrainSettings(max_steps=1, micro_batch_size=2), str(model), tmp_path / "w"
        )
    staging = list((tmp_path / "w").glob(".staging-*"))
    assert len(staging) == 1 and (staging[0] / "errors" / "rank-0.json").exists()
    assert checkpoint_problems(tmp_path / "w" / "none")  # nothing was published


def test_the_console_gets_the_training_lines_but_deepspeeds_op_notice():
    assert not console_line("DeepSpeed deepspeed.ops.comm.deepspeed_shm_comm_op built successfully")
    for line in (
        "step 3/3 loss 6.4927",
        "resuming from step-00000002 (step 2 of 3)",
        "[2026-12-07 19:27:55,671] [WARNING] [engine.py:1] a real DeepSpeed warning",
        "RuntimeError: the op was not built successfully",
    ):
        assert console_line(line)


def test_the_first_rank_to_fail_is_the_cause(tmp_path):
    """Rank 1 dies first; rank 0 then fails on the closed connection. The report names rank 1."""
    (tmp_path / "rank-0.json").write_text(json.dumps(
        {"rank": 0, "time": 20.0, "error": "RuntimeError: Connection closed by peer", "traceback": "t0"}))  # fmt: skip
    (tmp_path / "rank-1.json").write_text(json.dumps(
        {"rank": 1, "time": 10.0, "error": "ValueError: max() arg is an empty sequence", "traceback": "t1"}))  # fmt: skip
    message = _failure(tmp_path, 1, deque(["last line"]))
    assert message.startswith(
        "training failed on rank 1 (then ranks [0] failed too): ValueError: max() arg"
    )
    assert "last line" in _failure(tmp_path / "none", 1, deque(["last line"]))


def test_a_dataset_of_two_refine_turns_is_refused_before_launch(models_home, tmp_path):
    rows = _dataset(4).to_pylist()
    rows[1]["refine_turn"] = "Another turn: {query}"
    mixed = pa.Table.from_pylist(rows, schema=schemas.PTR_DATASET)
    with pytest.raises(ValueError, match="rows record 2 refine turns"):
        _train(models_home, tmp_path, mixed, micro_batch_size=2)


def test_too_few_rows_are_refused_before_launch(models_home, tmp_path):
    with pytest.raises(
        TrainingFailed, match=r"1 training rows .* fewer than num_gpus=2 x micro_batch_size=4 = 8"
    ):
        train_in_subprocess(
            _dataset(1),
            TrainSettings(num_gpus=2, micro_batch_size=4),
            models_home.resolve_model("tiny:base"),
            tmp_path,
        )
    with pytest.raises(
        TrainingFailed, match=r"0 training rows fit max_seq_len=16 \(2 longer rows dropped\)"
    ):
        train_in_subprocess(
            _dataset(2), TrainSettings(max_seq_len=16, micro_batch_size=1),
            models_home.resolve_model("tiny:base"), tmp_path,
        )  # fmt: skip
    assert not list(tmp_path.glob(".staging-*"))  # refused before anything was staged


def test_launch_command_one_rank_and_several(tmp_path):
    import sys

    one = command(TrainSettings(), tmp_path / "job.json")
    assert one == [
        sys.executable,
        "-m",
        "ptr_pipeline.training.train",
        "--job",
        str(tmp_path / "job.json"),
    ]
    env = environment(TrainSettings(), "cpu")
    assert env["DS_ACCELERATOR"] == "cpu"
    assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == ("0", "1", "0")
    # DeepSpeed's op build cache belongs to this environment, not to the shared home cache.
    assert env["TORCH_EXTENSIONS_DIR"].startswith(sys.prefix)
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
def test_a_non_finite_loss_fails_training(models_home, tmp_path):
    settings = TrainSettings(
        learning_rate=1e8, gradient_clipping=0.0, max_steps=6, micro_batch_size=2
    )
    with pytest.raises(
        TrainingFailed, match=r"training failed on rank 0: FloatingPointError: loss is nan"
    ):
        train_in_subprocess(_dataset(8), settings, models_home.resolve_model("tiny:base"), tmp_path)
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # nothing cached


@pytest.mark.slow
def test_ptr3_in_bf16_with_activation_checkpointing(models_home, tmp_path):
    """The paper's loss with every term on, bf16 weights and recomputed activations: each step's
    loss is the lambda-weighted sum of the logged terms, and training lowers the answer loss."""
    from safetensors import safe_open

    result, lines = _train(
        models_home, tmp_path, _dataset(16), loss="ptr3", ptr3_lambdas=[0.6, 0.2, 0.2],
        precision="bf16", gradient_checkpointing=True, micro_batch_size=4, max_steps=6,
        learning_rate=1e-2,
    )  # fmt: skip
    summary = result.manifest["summary"]
    parts = summary["loss_parts"]
    assert sorted(parts) == ["answer_ce", "confidence", "consistency"]
    for step, loss in enumerate(summary["loss_curve"]):
        weighted = 0.6 * parts["answer_ce"][step] + 0.2 * parts["consistency"][step]
        assert loss == pytest.approx(weighted + 0.2 * parts["confidence"][step], abs=1e-5)
    assert all(v > 0 for curve in parts.values() for v in curve)
    assert parts["answer_ce"][-1] < parts["answer_ce"][0]
    assert any(line.startswith("step 6/6 loss") and "consistency" in line for line in lines)
    with safe_open(result.checkpoint / "model.safetensors", "pt") as f:
        assert f.get_tensor(next(iter(f.keys()))).dtype == torch.bfloat16
