"""LoRA adapters with peft (0.21): wrap the base model for training, save the trained adapters.

LoRA (Hu et al. 2021, peft's ``LoraConfig``) freezes each targeted ``nn.Linear`` of weight ``W``
(``out x in``) and learns ``lora_A`` (``r x in``, random init) and ``lora_B`` (``out x r``, zeros
init), so the layer computes ``x W^T + (alpha / r) * dropout(x) A^T B^T``. In the model's
``state_dict`` the base weight becomes ``<module>.base_layer.weight`` and the adapters
``<module>.lora_A.default.weight`` and ``<module>.lora_B.default.weight``, all under the
``PeftModel``'s ``base_model.model.`` prefix.

A checkpoint holds two things (``save_lora``): the merged model (``W + (alpha / r) * B A``, a
plain Hugging Face model in ``output_dir``) and the adapter alone (``output_dir/adapter``, what
``peft.PeftModel.from_pretrained(base, output_dir / "adapter")`` loads).

Under ZeRO-3 each rank holds only a slice of every parameter bigger than
``stage3_param_persistence_threshold`` (1e5 elements by default); ``engine.module.state_dict()``
then returns zero-size tensors for them. ``engine._zero3_consolidated_16bit_state_dict()`` (every
rank calls it, rank 0 gets the dict) gathers them with the same key names as the unpartitioned
``peft_model.state_dict()``, in the training dtype (fp32 stays fp32 despite the name).
``exclude_frozen_parameters=True`` keeps only the adapters there, which is all ``save_lora`` needs.
"""

from pathlib import Path

import peft
import torch
from transformers import AutoModelForCausalLM

from ptr_pipeline.training.settings import LoraSettings

ADAPTER_DIR = "adapter"  # output_dir / ADAPTER_DIR holds the adapter alone

__all__ = ["ADAPTER_DIR", "apply_lora", "lora_config", "save_lora"]


def lora_config(lora: LoraSettings) -> peft.LoraConfig:
    """peft's config for ``lora``.

    ``target_modules``: None lets peft pick its default for the architecture (Llama, Qwen2:
    ``q_proj`` and ``v_proj``); ``["all-linear"]`` becomes peft's string ``"all-linear"`` (every
    ``nn.Linear`` but the output layer); any other list names modules (suffixes of their names).
    """
    targets = lora.target_modules
    return peft.LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules="all-linear" if targets == ["all-linear"] else targets,
        task_type="CAUSAL_LM",
    )


def apply_lora(model: torch.nn.Module, lora: LoraSettings) -> peft.PeftModel:
    """Wrap ``model`` (modified in place) in LoRA adapters; only the adapters require grad.

    peft's default ``autocast_adapter_dtype=True`` keeps the adapters in float32 when the model
    is bf16/fp16; DeepSpeed's bf16 mode casts them to bf16 with the rest (seen under ZeRO-3: the
    gathered adapters are bf16), its optimizer keeping fp32 master weights.
    """
    return peft.get_peft_model(model, lora_config(lora))


def save_lora(
    state_dict: dict[str, torch.Tensor],
    base_model_path: str,
    lora: LoraSettings,
    output_dir: Path,
    dtype: torch.dtype,
) -> None:
    """Write the merged model to ``output_dir`` and the adapter to ``output_dir/adapter``.

    Args:
        state_dict: the trained ``PeftModel``'s weights, keys as in ``peft_model.state_dict()``
            (``base_model.model.<module>.lora_A.default.weight``, ...): that dict itself, or under
            ZeRO-3 ``engine._zero3_consolidated_16bit_state_dict()`` (same keys). Only the adapter
            entries are read (the base weights come from ``base_model_path``), so a dict of the
            adapters alone works too.
        base_model_path: the model the adapters were trained on (what ``from_pretrained`` loads);
            recorded as ``base_model_name_or_path`` in ``adapter/adapter_config.json``.
        lora: the settings the model was trained with.
        output_dir: the checkpoint folder (created if missing).
        dtype: the dtype the base model is loaded, merged and saved in (the adapter file stays
            float32: ``apply_lora`` upcasts it, losslessly).

    The model is rebuilt on CPU (``from_pretrained`` + ``apply_lora``): one copy of the model
    besides ``state_dict``, merged in place.

    Raises:
        ValueError: an adapter weight is missing from ``state_dict``, or has the wrong shape
            (zero-size: an ungathered ZeRO-3 partition).
    """
    output_dir = Path(output_dir)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(base_model_path, dtype=dtype), lora)
    model.load_state_dict(_adapter_weights(state_dict, model), strict=False)
    model.peft_config["default"].base_model_name_or_path = str(base_model_path)
    model.save_pretrained(output_dir / ADAPTER_DIR)  # adapter_config.json, .safetensors
    model.merge_and_unload().save_pretrained(output_dir)  # config.json, model.safetensors


def _adapter_weights(
    state_dict: dict[str, torch.Tensor], model: peft.PeftModel
) -> dict[str, torch.Tensor]:
    """The entries of ``state_dict`` for ``model``'s trainable (adapter) parameters, checked."""
    wanted = {name: p.shape for name, p in model.named_parameters() if p.requires_grad}
    missing = sorted(set(wanted) - set(state_dict))
    if missing:
        raise ValueError(
            f"the state dict lacks {len(missing)} of {len(wanted)} LoRA weights, e.g. "
            f"{missing[:3]}; expected peft_model.state_dict() keys (it has e.g. "
            f"{list(state_dict)[:3]})"
        )
    empty = sorted(name for name in wanted if state_dict[name].numel() == 0)
    if empty:
        raise ValueError(
            f"{len(empty)} LoRA weights are zero-size, e.g. {empty[:3]}: ungathered ZeRO-3 "
            "partitions; pass engine._zero3_consolidated_16bit_state_dict() instead"
        )
    wrong = [
        f"{name}: {tuple(state_dict[name].shape)} != {tuple(shape)}"
        for name, shape in wanted.items()
        if state_dict[name].shape != shape
    ]
    if wrong:
        raise ValueError(f"LoRA weights of the wrong shape (another r?): {wrong[:3]}")
    return {name: state_dict[name] for name in wanted}
