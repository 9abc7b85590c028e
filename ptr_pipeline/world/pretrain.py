"""Pretraining the world's Llama from scratch: one run whose snapshots are the world's models.

``weak``, ``base`` and ``strong`` are the same Llama (``transformers``' ``LlamaForCausalLM``)
trained on the world's corpus for growing step budgets: the paper's "model version" strategy for
choosing a weak/strong pair (section 2.2 of docs/paper_notes.md: the later release is the
stronger one). Training ids come from ``conversation.ChatFormat.encode``, the one owner of
conversation -> ids; batches are laid out by the training stage's ``collate``.

The loop is plain torch: AdamW on the causal-LM cross-entropy of the supervised tokens, a
trapezoid learning-rate schedule, shuffled batches each of one prompt layout. A progress line
comes about every ``PROGRESS_EVERY_S`` seconds and at each snapshot step, with the step, the loss,
the time spent and the expected total (``Progress``).
"""

import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any

from ptr_pipeline.world import tasks
from ptr_pipeline.world.corpus import corpus
from ptr_pipeline.world.recipe import WorldRecipe
from ptr_pipeline.world.tokenizer import build_tokenizer

PROGRESS_EVERY_S = 10.0  # a progress line about this often (seconds of wall-clock time)

# Called after every optimizer step: (model, tokenizer, step 1..steps, the loss of every step so far).
OnStep = Callable[[Any, Any, int, list[float]], None]


def pretrain(recipe: WorldRecipe, on_step: OnStep, on_line: Callable[[str], None]) -> list[float]:
    """Train a fresh Llama on the world's corpus for ``recipe.steps`` steps, on
    ``recipe.torch_threads`` torch threads (restored after); ``on_step(model, tokenizer, step,
    losses)`` after each step (step 1..steps) may save it.

    Returns:
        the loss of every step (5 decimals).

    Raises:
        FloatingPointError: a step's loss is not finite.
    """
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    threads = torch.get_num_threads()
    torch.set_num_threads(recipe.torch_threads)
    try:
        return _pretrain_pinned(recipe, on_step, on_line)
    finally:
        torch.set_num_threads(threads)


def _pretrain_pinned(
    recipe: WorldRecipe, on_step: OnStep, on_line: Callable[[str], None]
) -> list[float]:
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    from ptr_pipeline.conversation import ChatFormat

    split = tasks.eval_split(recipe.seed, recipe.eval_items, recipe.operands)
    rows = corpus(recipe, split, recipe.steps * recipe.batch_size)
    tokenizer = build_tokenizer([r.conversation for r in rows], recipe.vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=recipe.hidden_size,
        intermediate_size=recipe.intermediate_size,
        num_hidden_layers=recipe.num_layers,
        num_attention_heads=recipe.hidden_size // 32,  # head size 32: vLLM's CPU kernels' minimum
        num_key_value_heads=recipe.hidden_size // 32,
        max_position_embeddings=recipe.context_length,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(recipe.seed)
    model = AutoModelForCausalLM.from_config(config)
    with tempfile.TemporaryDirectory(prefix="world-init-") as init:
        # Encode as inference will: the format of the saved folder, as any model's is read.
        model.save_pretrained(init)
        tokenizer.save_pretrained(init)
        chat_format = ChatFormat.from_pretrained(init)
    by_text: dict = {}  # the corpus repeats problems: encode each distinct conversation once
    for r in rows:
        key = json.dumps(r.conversation)
        if key not in by_text:
            by_text[key] = chat_format.encode(r.conversation, [1.0])
    encoded = [by_text[json.dumps(r.conversation)] for r in rows]
    n_params = sum(p.numel() for p in model.parameters())
    on_line(
        f"world: pretraining a {n_params:,}-parameter Llama on {len(encoded):,} conversations "
        f"({sum(len(e.input_ids) for e in encoded) / len(encoded):.0f} tokens each), "
        f"{recipe.steps} steps; snapshots "
        f"{recipe.snapshots or 'chosen by probe accuracy ' + str(recipe.snapshot_targets)}"
    )
    batches = batch_order([r.layout for r in rows], recipe.batch_size, recipe.seed)
    return _train(model, tokenizer, encoded, batches, recipe, on_step, on_line)


def batch_order(layouts: list[str], batch_size: int, seed: int) -> list[list[int]]:
    """The corpus rows of each batch (indices into ``layouts``, row i's prompt layout), in
    training order: shuffled, each batch of one layout, so a batch of short rows is not padded to
    a draft prompt's length; the batches of a layout cut its rows in shuffled order, the last one
    partial."""
    # The layout is a coin of its own, blind to the problem. (Batches grouped by *length* held
    # every model at chance: rows of one length share their carries, so a batch could be fit
    # without reading the operands. docs/world.md.)
    rng = random.Random(seed)
    order = list(range(len(layouts)))
    rng.shuffle(order)
    batches = []
    for layout in sorted(set(layouts)):
        rows = [i for i in order if layouts[i] == layout]
        batches += [rows[i : i + batch_size] for i in range(0, len(rows), batch_size)]
    rng.shuffle(batches)
    return batches


def _train(model, tokenizer, encoded: list, batches: list[list[int]], recipe: WorldRecipe,
           on_step: OnStep, on_line: Callable[[str], None]) -> list[float]:  # fmt: skip
    """``recipe.steps`` AdamW steps on ``model``, step s on ``batches[(s - 1) % len(batches)]``
    (rows of ``encoded``). Returns the loss per step."""
    import torch

    from ptr_pipeline.training.tokenize import collate

    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe.learning_rate, weight_decay=0.0)
    steps = recipe.steps
    # Warm up over 10% of the steps, hold, then decay linearly over the last 20% (a "trapezoid"
    # schedule; torch's LambdaLR).
    warm, decay = max(1, steps // 10), max(1, steps // 5)

    def factor(step: int) -> float:
        return min((step + 1) / warm, 1.0, (steps - step) / decay)

    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    progress = Progress(steps, on_line)
    snapshot_steps = set(recipe.snapshots.values()) if recipe.snapshots else set()
    losses: list[float] = []
    model.train()
    for step in range(1, steps + 1):
        # The training stage's collation, unpacked: rows right-padded with the pad id, labels
        # IGNORE_INDEX on padding, an attention mask. Its position_ids (restarting at 0 on the
        # padding, for packed rows) are not passed: the model's default 0..s-1 equals them on
        # every real token, and it is what every built world was trained with.
        batch = collate([encoded[i] for i in batches[(step - 1) % len(batches)]],
                        tokenizer.pad_token_id)  # fmt: skip
        loss = model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels
        ).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(round(loss.item(), 5))
        if not math.isfinite(losses[-1]):
            raise FloatingPointError(f"world pretraining: loss {losses[-1]} at step {step}")
        progress.update(step, losses[-1], force=step in snapshot_steps)
        on_step(model, tokenizer, step, losses)
    return losses


class Progress:
    """Progress lines of a run of ``total_steps`` steps: one when ``every_s`` seconds of
    ``clock`` (seconds) passed since the last line (or the start), one at the last step, and one
    whenever forced. Each gives the step, the loss, the time since the start (m:ss) and the
    expected total (the mean time per step so far, times ``total_steps``), e.g.
    ``world: pretraining step 120/400 loss 0.8123 (1:36 elapsed, about 5:20 in all)``."""

    def __init__(
        self,
        total_steps: int,
        on_line: Callable[[str], None],
        every_s: float = PROGRESS_EVERY_S,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.total_steps = total_steps
        self.on_line = on_line
        self.every_s = every_s
        self.clock = clock
        self.started = self.last = clock()

    def update(self, step: int, loss: float, force: bool = False) -> None:
        """Step ``step`` (1..total_steps) is done with ``loss``: a line if one is due."""
        now = self.clock()
        if not (force or step == self.total_steps or now - self.last >= self.every_s):
            return
        self.last = now
        elapsed = now - self.started
        expected = elapsed / step * self.total_steps
        self.on_line(
            f"world: pretraining step {step}/{self.total_steps} loss {loss:.4f} "
            f"({_clock_time(elapsed)} elapsed, about {_clock_time(expected)} in all)"
        )


def _clock_time(seconds: float) -> str:
    """``seconds`` as m:ss (h:mm:ss from an hour)."""
    minutes, s = divmod(round(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}:{m:02d}:{s:02d}" if hours else f"{m}:{s:02d}"
