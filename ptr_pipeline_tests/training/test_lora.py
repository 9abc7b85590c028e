"""LoRA (training.lora): which modules get adapters, and that a saved checkpoint (merged model and
adapter) computes the trained model's logits, from a plain state dict and from a ZeRO-3 gather."""

import json
import os
import subprocess
import sys
from pathlib import Path

import peft
import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig

from ptr_pipeline.training import TrainSettings
from ptr_pipeline.training.launch import environment
from ptr_pipeline.training.lora import ADAPTER_DIR, apply_lora, lora_config, save_lora
from ptr_pipeline.training.settings import LoraSettings
from ptr_pipeline_tests.training import lora_zero3

REPO = Path(__file__).resolve().parents[2]
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _llama(folder: Path, hidden: int, intermediate: int, layers: int, heads: int, kv: int) -> str:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        tie_word_embeddings=True,
    )
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> str:
    """2 layers, hidden 32, grouped-query attention (k/v_proj: 32 -> 16)."""
    return _llama(tmp_path_factory.mktemp("tiny"), 32, 64, 2, 4, 2)


def _adapted(model: peft.PeftModel) -> set[str]:
    return {name.split(".")[-4] for name, p in model.named_parameters() if p.requires_grad}


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_config_maps_the_settings():
    config = lora_config(LoraSettings(r=8, alpha=4.0, dropout=0.25, target_modules=None))
    assert (config.r, config.lora_alpha, config.lora_dropout) == (8, 4.0, 0.25)
    assert config.target_modules is None and config.task_type == "CAUSAL_LM"
    assert lora_config(LoraSettings(target_modules=["all-linear"])).target_modules == "all-linear"
    assert lora_config(LoraSettings(target_modules=["o_proj"])).target_modules == {"o_proj"}


@pytest.mark.parametrize(
    ("targets", "adapted", "trainable"),
    [
        # r x (in + out) per module and layer: q (32 -> 32) 256, v (32 -> 16) 192; x 2 layers
        (None, {"q_proj", "v_proj"}, 2 * (256 + 192)),
        # + k 192, o 256, gate/up (32 -> 64) 384 each, down (64 -> 32) 384; not lm_head
        (["all-linear"], set(LINEAR), 2 * (256 + 192 + 192 + 256 + 3 * 384)),
        (["o_proj", "down_proj"], {"o_proj", "down_proj"}, 2 * (256 + 384)),
    ],
)
def test_apply_lora_trains_only_the_adapters(tiny, targets, adapted, trainable):
    model = apply_lora(
        AutoModelForCausalLM.from_pretrained(tiny), LoraSettings(r=4, target_modules=targets)
    )
    assert isinstance(model, peft.PeftModel)
    assert _adapted(model) == adapted
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".lora_A.default." in n or ".lora_B.default." in n for n in names)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable


def test_save_lora_reloads_the_trained_logits(tiny, tmp_path):
    lora = LoraSettings(r=4, alpha=8.0, dropout=0.1, target_modules=["all-linear"])
    torch.manual_seed(1)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny), lora)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    ids = torch.randint(0, 64, (2, 10))
    for _ in range(5):
        model(input_ids=ids, labels=ids).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    lora_b = [p for n, p in model.named_parameters() if ".lora_B." in n]
    assert min(p.abs().max().item() for p in lora_b) > 1e-3  # every B moved off its zero init
    trained = _logits(model, ids)

    save_lora(model.state_dict(), tiny, lora, tmp_path, torch.float32)

    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    adapter_config = json.loads((tmp_path / ADAPTER_DIR / "adapter_config.json").read_text())
    assert adapter_config["base_model_name_or_path"] == tiny
    assert (adapter_config["r"], adapter_config["lora_alpha"]) == (4, 8.0)
    assert (tmp_path / ADAPTER_DIR / "adapter_model.safetensors").exists()
    base = _logits(AutoModelForCausalLM.from_pretrained(tiny), ids)
    assert (base - trained).abs().max() > 0.05  # the adapters matter: a base reload would fail
    merged = AutoModelForCausalLM.from_pretrained(tmp_path)
    assert not any("lora" in n for n, _ in merged.named_parameters())
    torch.testing.assert_close(_logits(merged, ids), trained, atol=1e-5, rtol=0)
    adapter = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny), tmp_path / ADAPTER_DIR
    )
    torch.testing.assert_close(_logits(adapter, ids), trained, atol=1e-5, rtol=0)


def test_save_lora_refuses_missing_empty_and_misshapen_adapters(tiny, tmp_path):
    lora = LoraSettings(r=4)
    state = apply_lora(AutoModelForCausalLM.from_pretrained(tiny), lora).state_dict()
    key = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"
    assert key in state
    missing = {k: v for k, v in state.items() if k != key}
    with pytest.raises(
        ValueError, match=r"lacks 1 of 8 LoRA weights.*layers\.1\.self_attn\.v_proj"
    ):
        save_lora(missing, tiny, lora, tmp_path / "a", torch.float32)
    with pytest.raises(ValueError, match=r"1 LoRA weights are zero-size.*ZeRO-3"):
        save_lora({**state, key: torch.empty(0)}, tiny, lora, tmp_path / "b", torch.float32)
    with pytest.raises(ValueError, match=r"wrong shape.*\(16, 2\) != \(16, 4\)"):
        save_lora({**state, key: torch.zeros(16, 2)}, tiny, lora, tmp_path / "c", torch.float32)
    # the base model's own keys (no base_model.model. prefix) are not a PeftModel's
    unwrapped = {k.removeprefix("base_model.model."): v for k, v in state.items()}
    with pytest.raises(ValueError, match="lacks 8 of 8"):
        save_lora(unwrapped, tiny, lora, tmp_path / "d", torch.float32)
    assert not any((tmp_path / d).exists() for d in "abcd")


@pytest.mark.slow
def test_save_lora_from_a_zero3_gather(tmp_path):
    """A real single-rank ZeRO-3 training (fp32, 2 steps) in a subprocess. The adapters are 256 x
    512 (> stage3_param_persistence_threshold = 1e5 elements), so ZeRO-3 partitions them."""
    base = _llama(tmp_path / "base", 512, 256, 1, 8, 8)
    out = tmp_path / "out"
    out.mkdir()
    env = environment(TrainSettings(), "cpu")  # DS_ACCELERATOR=cpu, RANK=0, ..., a free port
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    argv = [sys.executable, "-m", lora_zero3.__name__, base, str(out)]
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]

    # Without a gather, engine.module.state_dict() holds zero-size adapters, and save_lora says so.
    ungathered = json.loads((out / "ungathered.json").read_text())
    assert len(ungathered) == 4 and all(shape == [0] for shape in ungathered.values())
    assert "4 LoRA weights are zero-size" in (out / "ungathered_error.txt").read_text()
    # The gather: peft_model.state_dict() keys and full shapes, fp32 (the training dtype).
    gathered = json.loads((out / "gathered.json").read_text())
    q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
    assert gathered["full"][q_a] == [[256, 512], "torch.float32"]
    assert "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight" in gathered["full"]
    assert len(gathered["full"]) == 16  # 12 base weights (lm_head tied) + 4 adapters
    assert sorted(gathered["adapters"]) == sorted(ungathered)

    ref = torch.load(out / "logits.pt")
    ids, trained = ref["input_ids"], ref["logits"]
    assert (_logits(AutoModelForCausalLM.from_pretrained(base), ids) - trained).abs().max() > 0.05
    for checkpoint in (out / "full", out / "adapters_only"):
        merged = AutoModelForCausalLM.from_pretrained(checkpoint)
        torch.testing.assert_close(_logits(merged, ids), trained, atol=1e-5, rtol=0)
        adapter = peft.PeftModel.from_pretrained(
            AutoModelForCausalLM.from_pretrained(base), checkpoint / ADAPTER_DIR
        )
        torch.testing.assert_close(_logits(adapter, ids), trained, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_lora_training_under_zero_3_resumes_and_publishes_merged_and_adapter(tmp_path):
    """Through the trainer: ZeRO-3 on partitioned shapes (hidden 512, r 256), adapter dropout on,
    killed at step 5 of 8 and rerun. The rerun ends bitwise where an uninterrupted run ends, and
    the published checkpoint's merged model equals the base model with its adapter."""
    from ptr_pipeline.models import build_tiny_tokenizer
    from ptr_pipeline.storage import file_sha256
    from ptr_pipeline.training import TrainingFailed, train_in_subprocess
    from ptr_pipeline_tests.training.test_resume import _kill_training
    from ptr_pipeline_tests.training.test_train import _dataset

    tokenizer = build_tiny_tokenizer()
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=512, intermediate_size=256, num_hidden_layers=1,
        num_attention_heads=16, num_key_value_heads=16, tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    base = tmp_path / "base"
    AutoModelForCausalLM.from_config(config).save_pretrained(base)
    tokenizer.save_pretrained(base)
    settings = TrainSettings(
        zero_stage=3, lora={"r": 256, "alpha": 256.0, "dropout": 0.1}, micro_batch_size=2,
        max_steps=8, save_steps=2, learning_rate=1e-3,
    )  # fmt: skip
    reference = train_in_subprocess(_dataset(32), settings, str(base), tmp_path / "reference")
    with pytest.raises(TrainingFailed):
        train_in_subprocess(
            _dataset(32), settings, str(base), tmp_path / "killed", on_line=_kill_training
        )
    resumed = train_in_subprocess(_dataset(32), settings, str(base), tmp_path / "killed")
    assert resumed.manifest["summary"]["resumed_from_step"] in (4, 6)
    assert resumed.manifest["summary"]["loss_curve"] == reference.manifest["summary"]["loss_curve"]
    for name in ("model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors"):
        assert name in resumed.manifest["files"]
        assert file_sha256(resumed.checkpoint / name) == file_sha256(reference.checkpoint / name)

    ids = torch.tensor([tokenizer("What is 3 plus 3?")["input_ids"]])
    merged = _logits(AutoModelForCausalLM.from_pretrained(resumed.checkpoint), ids)
    adapter = peft.PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), resumed.checkpoint / ADAPTER_DIR
    )
    torch.testing.assert_close(_logits(adapter, ids), merged, atol=1e-5, rtol=0)
    before = _logits(AutoModelForCausalLM.from_pretrained(base), ids)
    assert (merged - before).abs().max() > 1e-3  # the adapters trained
