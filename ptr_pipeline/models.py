"""Model references: Hugging Face ids, local folders, and the embedded tiny models.

A model setting is a string. ``tiny:weak``, ``tiny:strong`` and ``tiny:base`` name the embedded
default: a byte-level BPE tokenizer trained with ``tokenizers`` on the bundled samples and three
small randomly initialised causal LMs of different sizes (Llama and Qwen2 architectures), built
once with ``save_pretrained`` into a cache folder. Everything else (a hub id such as
``Qwen/Qwen2-7B`` or a local path) is passed to ``from_pretrained`` unchanged, which is the same
path the tiny models take. ``world:<role>`` names a model of the miniature world, which
``ptr_pipeline.world`` builds (this base module never imports it).

Each resolved setting is recorded as a one-row ``schemas.MODEL_REF`` table (``model_ref``): what
``from_pretrained`` loads, its fingerprint (``model_fingerprint``: file hashes, or the hub id) and
a revision: the hub commit of a cached hub model (``huggingface_hub.try_to_load_from_cache``;
nothing is downloaded), ``tiny`` for a tiny model, the world's recipe hash for a world model,
else the fingerprint.
"""

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import pyarrow as pa
import pydantic

from ptr_pipeline import schemas

log = logging.getLogger(__name__)

TINY_PREFIX = "tiny:"
TINY_CORPUS = ("arc", "gsm8k", "mmlu", "queries")  # bundled samples the tiny tokenizer reads
TINY_VERSION = "v2"  # bump when the recipe below changes; the cache folder name carries it
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]
VOCAB_SIZE = 2048

# name -> (architecture, hidden, layers, heads, kv heads, intermediate). weak < base < strong.
# Head size 32 everywhere: the smallest vLLM's CPU attention kernels accept.
TINY_MODELS = {
    "weak": ("llama", 64, 2, 2, 1, 128),
    "base": ("llama", 96, 2, 3, 1, 192),
    "strong": ("qwen2", 128, 3, 4, 2, 256),
}


WORLD_PREFIX = "world:"
WORLD_MODELS = ("weak", "base", "strong")  # the miniature world's models (ptr_pipeline.world)


def check_model_spec(spec: str) -> str:
    """``spec`` if it can name a model: a ``tiny:`` or ``world:`` name must exist, anything else
    must be a hub id or a path (checked when loaded). Raises ValueError, for settings validators."""
    if spec.startswith(TINY_PREFIX) and spec.removeprefix(TINY_PREFIX) not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {spec!r}; choose one of {sorted(TINY_MODELS)}")
    if spec.startswith(WORLD_PREFIX) and spec.removeprefix(WORLD_PREFIX) not in WORLD_MODELS:
        raise ValueError(f"unknown world model {spec!r}; choose one of {list(WORLD_MODELS)}")
    if not spec.strip():
        raise ValueError("empty model setting")
    # A hub id is "name" or "owner/name": anything else with a slash can only be a folder.
    path_like = spec.startswith(("/", ".", "~")) or spec.count("/") > 1
    if path_like and not Path(spec).expanduser().is_dir():
        raise ValueError(f"{spec}: no such model folder")
    return spec


# A settings field that names a model: a tiny: name that does not exist fails validation.
ModelSpec = Annotated[str, pydantic.AfterValidator(check_model_spec)]


def check_source(source: str) -> str:
    """``source`` if it can be read: ``bundled`` or ``world`` (packaged files), or a local path
    that exists (``hf:`` names are checked when loaded). Raises ValueError, for settings
    validators."""
    if not source.strip():
        raise ValueError("an empty source; give a file, a folder, hf:<name>, bundled or world")
    if source in ("bundled", "world") or source.startswith("hf:") or Path(source).exists():
        return source
    raise ValueError(f"{source}: not found")


def resolve_model(spec: str, cache_dir: Path) -> str:
    """Return what ``from_pretrained`` should load for ``spec``, building tiny models on demand.

    Raises:
        ValueError: for a ``tiny:`` name that does not exist.
    """
    if not spec.startswith(TINY_PREFIX):
        return spec
    name = spec.removeprefix(TINY_PREFIX)
    if name not in TINY_MODELS:
        raise ValueError(f"unknown tiny model {spec!r}; choose one of {sorted(TINY_MODELS)}")
    folder = Path(cache_dir) / f"tiny-{name}-{TINY_VERSION}"
    if not (folder / "config.json").exists():
        _build_tiny(name, folder)
    return str(folder)


def trained_refine_turn(model: str) -> str | None:
    """The refine turn a checkpoint was trained with (its manifest's ``refine_turn``, written by
    the training stage), or None for a model the pipeline did not train."""
    from ptr_pipeline.storage import CHECKPOINT_MANIFEST

    manifest = Path(model) / CHECKPOINT_MANIFEST
    if not manifest.is_file():
        return None
    content = json.loads(manifest.read_text())
    return content.get("refine_turn") if isinstance(content, dict) else None


def is_world_model(model: str) -> bool:
    """A ``world:`` setting, or a folder the miniature world built (its manifest's
    ``world_role``)."""
    from ptr_pipeline.storage import CHECKPOINT_MANIFEST

    if model.startswith(WORLD_PREFIX):
        return True
    manifest = Path(model) / CHECKPOINT_MANIFEST
    if not manifest.is_file():
        return False
    content = json.loads(manifest.read_text())
    return isinstance(content, dict) and "world_role" in content


def default_refine_turn(model: str) -> tuple[str, str]:
    """The refine turn ``model`` is asked with when no setting names one, and why: the turn it
    was trained with (its checkpoint manifest), else re-reading for the miniature world's models
    (they find a question only when it ends the prompt: docs/world.md), else the paper's generic
    turn (docs/paper_notes.md, section 4).

    Returns:
        (template, where it came from), e.g. ``(REREAD_REFINE_TURN, "the world's default")``.
    """
    from ptr_pipeline.conversation import GENERIC_REFINE_TURN, REREAD_REFINE_TURN

    trained = trained_refine_turn(model)
    if trained is not None:
        return trained, "the turn the checkpoint was trained with"
    if is_world_model(model):
        return REREAD_REFINE_TURN, "the miniature world's default (re-reading)"
    return GENERIC_REFINE_TURN, "the paper's generic turn"


HASHED_FILE_BYTES = 64 * 2**20  # larger weight files are identified by size and mtime


def model_fingerprint(model: str) -> str:
    """A sha256 that changes when the model ``from_pretrained`` would load changes.

    A hub id is its own identity (nothing is downloaded to look). A local folder is identified by
    its checkpoint manifest when it has one (``storage.CHECKPOINT_MANIFEST``: the files' sha256),
    else by every file's name and content hash, or name, size and mtime for files over 64 MiB
    (hashing a 15 GB checkpoint on every run would cost more than the work it saves).
    """
    from ptr_pipeline.storage import CHECKPOINT_MANIFEST, checkpoint_version, file_sha256

    folder = Path(model)
    if not folder.is_dir():
        return hashlib.sha256(f"hub:{model}".encode()).hexdigest()
    manifest = folder / CHECKPOINT_MANIFEST
    if manifest.is_file():
        content = json.loads(manifest.read_text())
        if isinstance(content, dict) and content.get("files"):
            return checkpoint_version(content)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        stat = p.stat()
        ident = (
            file_sha256(p)
            if stat.st_size <= HASHED_FILE_BYTES
            else f"{stat.st_size}:{stat.st_mtime_ns}"
        )
        h.update(f"{p.relative_to(folder)}\0{ident}\0".encode())
    return h.hexdigest()


def model_ref(role: str, spec: str, model: str, revision: str | None) -> pa.Table:
    """One row of ``schemas.MODEL_REF``: the setting ``spec`` of ``role``, resolved to ``model``
    (what ``from_pretrained`` loads), its fingerprint, and ``revision`` (None or empty: the first
    16 hex digits of the fingerprint)."""
    identity = model_fingerprint(model)
    row = {
        "role": role,
        "spec": spec,
        "model": model,
        "fingerprint": identity,
        "revision": revision or identity[:16],
    }
    return pa.Table.from_pylist([row], schema=schemas.MODEL_REF)


def resolve_model_ref(role: str, spec: str, models_dir: Path) -> pa.Table:
    """``model_ref`` of a ``tiny:`` name (built into ``models_dir`` on first use), a local folder
    or a hub id. A ``world:`` setting is the world's to resolve (``ptr_pipeline.world``).

    Returns:
        a one-row ``schemas.MODEL_REF`` table.

    Raises:
        ValueError: ``spec`` is a ``world:`` setting, or an unknown ``tiny:`` name.
        FileNotFoundError: a setting that looks like a path (``/``, ``./``, ``~``) names no folder.
    """
    if spec.startswith(WORLD_PREFIX):
        raise ValueError(f"{spec}: a world model; ptr_pipeline.world builds and resolves it")
    if spec.startswith(TINY_PREFIX):
        return model_ref(role, spec, resolve_model(spec, models_dir), "tiny")
    return model_ref(role, spec, spec, _hub_revision(spec))


def _hub_revision(spec: str) -> str | None:
    """The commit of a hub model in the local cache; None for a local folder (its fingerprint,
    file hashes, is its revision); else a note why there is none."""
    if Path(spec).is_dir():
        return None
    if spec.startswith(("/", "./", "../", "~")):
        raise FileNotFoundError(f"{spec}: no such model folder")
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(spec, "config.json")
    except Exception:  # not a valid repo id: from_pretrained will say so when it loads
        return "unresolved"
    if isinstance(cached, str):  # .../snapshots/<commit>/config.json
        return Path(cached).parent.name
    return "not in the local cache (resolved when loaded)"


def _training_corpus() -> list[str]:
    from ptr_pipeline.records import read_records
    from ptr_pipeline.samples import SAMPLES_DIR

    texts = []
    # A fixed list: the tiny models are cached by TINY_VERSION, so a sample file added later
    # must not change what a fresh build trains on.
    for path in [SAMPLES_DIR / f"{name}.jsonl" for name in TINY_CORPUS]:
        for record in read_records(path):
            texts.extend(_strings(record.fields))
    return texts


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def train_chat_tokenizer(texts, vocab_size: int, split_digits: bool = False):
    """A byte-level BPE tokenizer (``tokenizers``) trained on ``texts``, with the ChatML template,
    ``<|im_end|>`` as EOS and left padding; ``split_digits``: one token per digit
    (``pre_tokenizers.Digits``), as the world's arithmetic needs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny_tokenizer():
    """A byte-level BPE tokenizer trained on the bundled samples, with a ChatML chat template."""
    return train_chat_tokenizer(_training_corpus(), VOCAB_SIZE)


def _build_tiny(name: str, folder: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()

    arch, hidden, layers, heads, kv_heads, intermediate = TINY_MODELS[name]
    tokenizer = build_tiny_tokenizer()
    config_cls = {"llama": LlamaConfig, "qwen2": Qwen2Config}[arch]
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(sorted(TINY_MODELS).index(name))  # each tiny model has fixed weights
    model = AutoModelForCausalLM.from_config(config)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target, then rename: concurrent builders never see a half-written folder.
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first
            if not (folder / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("built tiny model %s (%s, %d parameters) in %s", name, arch, n_params, folder)
