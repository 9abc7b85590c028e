"""The world's models, pretrained here from scratch: one run, three snapshots.

``weak``, ``base`` and ``strong`` are the same Llama trained on the world's corpus for growing
step budgets (the paper's "model version" strategy for choosing a weak/strong pair, section 2.2
of docs/paper_notes.md: the later release is the stronger one). The corpus is conversations
rendered by the stages' own code: a task prompt (``evaluation.tasks``, exactly what evaluation
asks) -> the solution; a share ``icl_fraction`` of it asks in the strong stage's prompt
(``generation.prompts.strong_conversation`` with ``ptr_refine_v2``: one or two hurried drafts,
``tasks.Problem.draft_steps``, then the question), as an instruction-tuned model would know
such prompts. Models that never saw drafts answered that prompt with noise, and models taught
it only after pretraining copied the drafts' digits (docs/world.md).

No model has seen the multi-turn refinement conversation of test time ("Please continue
thinking and refine your answer."): that is what PTR training has to teach, and why the base
model prompted to refine is the paper's prompting baseline.

The tokenizer is a byte-level BPE (``tokenizers``) trained on the corpus, digits split one per
token (``pre_tokenizers.Digits``); the model is ``transformers``' ``LlamaForCausalLM``; training
ids come from ``conversation.ChatFormat.encode``, the one owner of conversation -> ids. Each
snapshot is saved with ``save_pretrained`` and a checkpoint manifest (file hashes), and everything
loads back through ``from_pretrained`` like any hub model.

The folder is keyed by a hash of the recipe and the code version: an unchanged rerun trains
nothing, a changed recipe builds a new world beside the old one.
"""

import json
import logging
import math
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydantic

from ptr_pipeline.conversation import Conversation
from ptr_pipeline.models import WORLD_MODELS, train_chat_tokenizer
from ptr_pipeline.storage import (
    CHECKPOINT_MANIFEST,
    checkpoint_problems,
    fingerprint,
    folder_manifest_files,
)
from ptr_pipeline.world import tasks

log = logging.getLogger(__name__)

CODE_VERSION = "world_v3"  # bump with any change below (schedule, tokenizer sample, ...)
ROLES = WORLD_MODELS


class WorldRecipe(pydantic.BaseModel):
    """Everything that decides the world's data and models (its hash names the folder)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    min_operand: int = pydantic.Field(10, ge=1, description="both operands are drawn from")
    max_operand: int = pydantic.Field(99, ge=1, description="... min_operand..max_operand")
    refine_template: str = pydantic.Field(
        "ptr_refine_v2", description="the strong stage's draft prompt the corpus teaches"
    )
    eval_items: int = pydantic.Field(500, ge=1, description="held-out problems per task")
    pool_queries: int = pydantic.Field(600, ge=1, description="queries offered to the query pool")
    icl_fraction: float = pydantic.Field(
        0.3,
        ge=0.0,
        le=1.0,
        description="share of the corpus in the strong stage's draft prompt: hurried drafts, then "
        "the question -> the right answer (models that never saw drafts answered that prompt "
        "with noise; taught it after pretraining, they copied the drafts' digits: docs/world.md, "
        "tries 14-19)",
    )
    vocab_size: int = pydantic.Field(512, ge=300)
    hidden_size: int = 128
    num_layers: int = 4
    intermediate_size: int = 256
    steps: int = pydantic.Field(400, ge=1, description="optimizer steps of the pretraining run")
    draft_slip_rate: float = pydantic.Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="chance that a step of a taught draft misreads a digit or mis-adds "
        "(tasks.Problem.draft_steps)",
    )
    batch_size: int = 64
    learning_rate: float = 3e-3
    torch_threads: int = pydantic.Field(
        2,
        ge=1,
        description="torch threads while building: float sums depend on the thread count, so "
        "the same recipe builds the same models whatever OMP_NUM_THREADS says, on one machine "
        "and torch build (2: the build takes 0.8 s a step on 2 cores against 1.2 s on one)",
    )
    snapshots: dict[str, int] = pydantic.Field(
        # Measured (GSM8K rendering, 500 held-out items, docs/world.md try 20): 33.6% at step
        # 285, 70.4% at 310, 100% at 400. Accuracy jumps between neighbouring steps here
        # (57.4% at 290, 39.4% at 295, 49.4% at 300), so a snapshot is chosen by measuring.
        default_factory=lambda: {"weak": 285, "base": 310, "strong": 400},
        description="step at which each model is saved",
    )

    @pydantic.model_validator(mode="after")
    def _check(self) -> "WorldRecipe":
        if self.min_operand > self.max_operand:
            raise ValueError("min_operand > max_operand")
        if sorted(self.snapshots) != sorted(ROLES):
            raise ValueError(f"snapshots must name {list(ROLES)}")
        steps = [self.snapshots[role] for role in ROLES]
        if not steps[0] < steps[1] < steps[2]:
            raise ValueError(f"snapshots must grow weak < base < strong (got {self.snapshots})")
        if not all(1 <= s <= self.steps for s in self.snapshots.values()):
            raise ValueError(f"snapshot steps must lie in 1..steps={self.steps}")
        return self

    @property
    def operands(self) -> tuple[int, int]:
        return (self.min_operand, self.max_operand)

    def key(self) -> str:
        return fingerprint(self.model_dump(), CODE_VERSION)[:12]


DATA_FIELDS = ("seed", "min_operand", "max_operand", "eval_items", "pool_queries")


def data_fields_changed(recipe: dict) -> list[str]:
    """The fields of ``recipe`` that decide the bundled data and differ from the default."""
    default = WorldRecipe().model_dump()
    return [f for f in DATA_FIELDS if recipe.get(f, default[f]) != default[f]]


def world_revision(recipe: WorldRecipe) -> str:
    """``world-<recipe hash>``: the name of the recipe's folder, and its models' revision."""
    return f"world-{recipe.key()}"


def world_folder(models_dir: Path, recipe: WorldRecipe) -> Path:
    """Where the models of ``recipe`` live: ``<models_dir>/world-<recipe hash>/<role>/``."""
    return Path(models_dir) / world_revision(recipe)


def describe(model: str) -> dict:
    """What a world model's manifest says (role, step, parameters, last loss); {} otherwise."""
    manifest = Path(model) / CHECKPOINT_MANIFEST
    if not manifest.is_file():
        return {}
    content = json.loads(manifest.read_text())
    if "world_role" not in content:
        return {}
    return {
        "world_step": content["step"],
        "parameters": content["parameters"],
        "pretrain_loss": content["loss_curve"][-1],
        "pretrain_seconds": content["train_seconds"],
    }


def prompt_of(task: str, row: dict, index: int) -> str:
    """What evaluation asks for ``row``: the eval stage's own parser renders it."""
    from ptr_pipeline.evaluation.tasks import TASKS
    from ptr_pipeline.records import Record

    return TASKS[task].parse(Record(row, "world", index + 1), index).prompt


def corpus(
    recipe: WorldRecipe,
    split: tasks.Split,
    n: int,
    stream: str = "corpus",
    icl_fraction: float | None = None,
) -> list[Conversation]:
    """``n`` pretraining conversations (see the module docstring), none on a held-out problem;
    a share ``icl_fraction`` (default: the recipe's) in the strong stage's draft prompt."""
    return [c for c, _ in _corpus(recipe, split, n, stream, icl_fraction)]


def _corpus(
    recipe: WorldRecipe, split: tasks.Split, n: int, stream: str, icl_fraction: float | None
) -> list[tuple[Conversation, str]]:
    """``corpus``, each conversation with its layout: "plain" or the draft prompt's template."""
    from ptr_pipeline.generation.prompts import strong_conversation

    share = recipe.icl_fraction if icl_fraction is None else icl_fraction
    rng = random.Random(f"world-{stream}-{recipe.seed}")
    conversations = []
    rows = tasks.train_rows(split, stream, n, recipe.seed, recipe.operands, distinct=False)
    for i, (task, row) in enumerate(rows):
        problem = tasks.operands(row)
        right = tasks.response(task, row, *problem.steps())
        prompt = prompt_of(task, row, i)
        layout = "plain"
        if rng.random() < share:
            drafts = [
                tasks.response(task, row, *problem.draft_steps(rng, recipe.draft_slip_rate))
                for _ in range(rng.choice([1, 2]))
            ]
            layout = recipe.refine_template
            user = strong_conversation(prompt, drafts, [], layout, "")
        else:
            user = [{"role": "user", "content": prompt}]
        conversations.append(([*user, {"role": "assistant", "content": right}], layout))
    return conversations


def build_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE with one token per digit, ChatML template, ``<|im_end|>`` as EOS."""
    return train_chat_tokenizer(texts, vocab_size, split_digits=True)


def build_world_models(
    models_dir: Path, recipe: WorldRecipe, on_line: Callable[[str], None] = log.info
) -> dict[str, Path]:
    """The three model folders of ``recipe``, pretrained now unless an intact copy exists.

    Returns:
        role (``weak``, ``base``, ``strong``) -> a Hugging Face checkpoint folder.
    """
    folder = world_folder(models_dir, recipe)
    paths = {role: folder / role for role in ROLES}
    if all(p.is_dir() and not checkpoint_problems(p) for p in paths.values()):
        return paths
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
    try:
        _pretrain(recipe, tmp, on_line)
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete earlier build
        try:
            os.rename(tmp, folder)
        except OSError:  # another process finished first
            if any(checkpoint_problems(p) for p in paths.values()):
                raise
        on_line(f"world: models in {folder}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return paths


def _pretrain(
    recipe: WorldRecipe, out: Path, on_line: Callable[[str], None], probe_every: int = 0
) -> None:
    """Train and save the snapshots into ``out``, on ``recipe.torch_threads`` threads;
    ``probe_every`` > 0 also saves ``probe-<step>`` folders along the way (for choosing snapshot
    steps; docs/world.md)."""
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.torch_threads)
    try:
        _pretrain_pinned(recipe, out, on_line, probe_every)
    finally:
        torch.set_num_threads(threads)


def _pretrain_pinned(
    recipe: WorldRecipe, out: Path, on_line: Callable[[str], None], probe_every: int
) -> None:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ptr_pipeline.conversation import ChatFormat

    started = time.perf_counter()
    split = tasks.eval_split(recipe.seed, recipe.eval_items, recipe.operands)
    conversations, layouts = zip(*_corpus(recipe, split, recipe.steps * recipe.batch_size,
                                          "corpus", None), strict=True)  # fmt: skip
    conversations = list(conversations)
    tokenizer = build_tokenizer(
        [m["content"] for c in conversations[:5000] for m in c],
        recipe.vocab_size,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.hidden_size // 32,  # head size 32: vLLM's CPU kernels' minimum
        num_key_value_heads=recipe.hidden_size // 32,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_config(config)
    init = out / "init"
    model.save_pretrained(init)
    tokenizer.save_pretrained(init)
    fmt = ChatFormat.from_pretrained(str(init))
    shutil.rmtree(init)
    by_text: dict = {}  # the corpus repeats problems: encode each distinct conversation once

    def encode(rows: list[Conversation]) -> list:
        for conversation in rows:
            key = json.dumps(conversation)
            if key not in by_text:
                by_text[key] = fmt.encode(conversation, [1.0])
        return [by_text[json.dumps(c)] for c in rows]

    encoded = encode(conversations)
    n_params = sum(p.numel() for p in model.parameters())
    on_line(
        f"world: pretraining a {n_params:,}-parameter Llama on {len(encoded):,} conversations "
        f"({sum(len(e.input_ids) for e in encoded) / len(encoded):.0f} tokens each), "
        f"{recipe.steps} steps; snapshots {recipe.snapshots}"
    )
    at_step = {step: role for role, step in recipe.snapshots.items()}

    def save(trained, role: str, step: int, losses: list[float]) -> None:
        target = out / role
        trained.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)
        manifest = {
            "world_role": role,
            "recipe": recipe.model_dump(),
            "code_version": CODE_VERSION,
            "step": step,
            "parameters": n_params,
            "loss_curve": losses,
            "train_seconds": round(time.perf_counter() - started, 1),
            "files": folder_manifest_files(target),
        }
        (target / CHECKPOINT_MANIFEST).write_text(json.dumps(manifest, indent=1))
        on_line(f"world: saved {role} (step {step}, loss {losses[-1]:.4f})")

    def on_step(trained, step: int, losses: list[float]) -> None:
        if probe_every and step % probe_every == 0:
            trained.save_pretrained(out / f"probe-{step}")
            tokenizer.save_pretrained(out / f"probe-{step}")
        role = at_step.get(step)
        if role is not None:
            save(trained, role, step, losses[:])

    _train(model, encoded, list(layouts), recipe.steps, recipe, tokenizer.pad_token_id,
           "pretraining", on_line, on_step)  # fmt: skip


def _train(model, encoded: list, layouts: list[str], steps: int, recipe: WorldRecipe, pad: int,
           what: str, on_line: Callable[[str], None], on_step=None) -> list[float]:  # fmt: skip
    """``steps`` AdamW steps of ``recipe.batch_size`` rows of ``encoded`` on ``model`` (plain
    torch: causal-LM cross-entropy on the supervised tokens). ``layouts[i]``: row i's prompt
    layout. Returns the loss per step."""
    import torch

    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    # Warm up over 10% of the steps, hold, then decay linearly over the last 20% (a "trapezoid"
    # schedule; torch's LambdaLR).
    warm, decay = max(1, steps // 10), max(1, steps // 5)

    def factor(step: int) -> float:
        return min((step + 1) / warm, 1.0, (steps - step) / decay)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    # Shuffled batches, each of one layout (plain question or a draft prompt), so a batch of
    # short rows is not padded to a draft prompt's length. The layout is a coin of its own,
    # blind to the problem. (Batches grouped by *length* held every model at chance: rows of
    # one length share their carries, so a batch could be fit without reading the operands.
    # docs/world.md.)
    rng = random.Random(recipe.seed)
    order = list(range(len(encoded)))
    rng.shuffle(order)
    batches = []
    for layout in sorted(set(layouts)):
        rows = [i for i in order if layouts[i] == layout]
        batches += [rows[i : i + recipe.batch_size] for i in range(0, len(rows), recipe.batch_size)]
    rng.shuffle(batches)
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        batch = [encoded[i] for i in batches[(step - 1) % len(batches)]]
        width = max(len(e.input_ids) for e in batch)
        input_ids = torch.tensor([e.input_ids + [pad] * (width - len(e.input_ids)) for e in batch])
        labels = torch.tensor([e.labels + [-100] * (width - len(e.labels)) for e in batch])
        attention = torch.tensor(
            [[1] * len(e.input_ids) + [0] * (width - len(e.input_ids)) for e in batch]
        )
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 5))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"world {what}: loss {losses[-1]} at step {step}")
        if step % 50 == 0 or step == steps:
            on_line(f"world: {what} step {step}/{steps} loss {losses[-1]:.4f}")
        if on_step is not None:
            on_step(model, step, losses)
    return losses
