"""Choosing the world's snapshots by measuring: probe accuracy during pretraining.

The world's ``weak``, ``base`` and ``strong`` models are snapshots of one pretraining run, and what
makes a role is its capability: a weak model that drafts with slips, a base model between, a strong
model that is nearly always right. Which steps have those capabilities is not a property of the
recipe alone: float sums differ between CPUs (MKL's and torch's kernels are chosen by vendor and
instruction set: docs/world.md, "What the results depend on"), a 400-step run amplifies them, and
accuracy jumps between neighbouring steps (57% at one step, 39% five steps later). Fixed steps
chosen on one machine gave weak 33.6% / base 70.4% there and weak 65.2% / base 66.2% on another.

So the build measures: every ``probe_every`` steps from ``probe_from`` (and at the last step) it
asks the model ``probe_items`` GSM8K-style problems (greedy decoding, the eval stage's prompt and
judge), drawn from a stream of their own, never a held-out eval problem. Then ``choose_snapshots``
picks the steps whose probe accuracy is closest to the recipe's targets, in order:
``weak`` < ``base`` < ``strong`` = the last step. The targets are the roles' design (issue 6's
bands: weak 20-50%, strong >= 85%), not a figure tuned to make PTR look good; every probe is
recorded in the models' manifests.
"""

import copy
from collections.abc import Iterable

from ptr_pipeline.conversation import ChatFormat
from ptr_pipeline.world import tasks
from ptr_pipeline.world.corpus import prompt_of
from ptr_pipeline.world.recipe import WorldRecipe

PROBE_TASK = "gsm8k"  # the rendering the world's models learn (the ARC one stays at chance)
PROBE_STREAM = "probe"  # tasks.train_rows stream: disjoint from the eval split
MAX_NEW_TOKENS = 48  # an answer is about 25 tokens ("8+9+0=17 5+5+1=11 The answer is 117.")


def probe_examples(recipe: WorldRecipe, split: tasks.Split) -> list:
    """``recipe.probe_items`` GSM8K-style problems (``evaluation.EvalExample``), none of them a
    held-out eval problem, as the eval stage renders them."""
    from ptr_pipeline.evaluation.tasks import TASKS
    from ptr_pipeline.records import Record

    items = tasks.train_rows(
        split, PROBE_STREAM, 2 * recipe.probe_items, recipe.seed, recipe.operands
    )  # fmt: skip  (the tasks alternate: half are gsm8k)
    rows = [item.row for item in items if item.task == PROBE_TASK][: recipe.probe_items]
    examples = []
    for i, row in enumerate(rows):
        example = TASKS[PROBE_TASK].parse(Record(row, "world probe", i + 1), i)
        assert example.prompt == prompt_of(PROBE_TASK, row, i)
        examples.append(example)
    return examples


class Prober:
    """Greedy accuracy of a model in training on fixed examples, without disturbing the run: no
    gradient, the torch RNG state restored, the module put back in train mode."""

    def __init__(self, tokenizer, examples: list, batch_size: int = 100):
        from ptr_pipeline.evaluation.tasks import TASKS

        self.format = ChatFormat(tokenizer)
        self.examples = examples
        self.batch_size = batch_size
        self.judge = TASKS[PROBE_TASK].judge
        self.prompts = [
            self.format.prompt_ids([{"role": "user", "content": e.prompt}]) for e in examples
        ]
        self.pad = tokenizer.pad_token_id

    def accuracy(self, model) -> float:
        """Share of the examples ``model`` answers right (0-1)."""
        import torch

        rng = torch.random.get_rng_state()
        model.eval()
        right = 0
        try:
            with torch.no_grad():
                for start in range(0, len(self.prompts), self.batch_size):
                    batch = self.prompts[start : start + self.batch_size]
                    for example, text in zip(
                        self.examples[start : start + self.batch_size],
                        self._generate(model, batch),
                        strict=True,
                    ):
                        right += bool(self.judge(text, example).correct)
        finally:
            model.train()
            torch.random.set_rng_state(rng)
        return right / len(self.prompts)

    def _generate(self, model, prompts: list[list[int]]) -> Iterable[str]:
        import torch

        width = max(map(len, prompts))
        input_ids = torch.tensor([[self.pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(
            input_ids=input_ids,
            attention_mask=mask,
            max_new_tokens=MAX_NEW_TOKENS,
            do_sample=False,
            eos_token_id=list(self.format.stop_token_ids),
            pad_token_id=self.pad,
        )
        return self.format.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)


def probe_steps(recipe: WorldRecipe) -> list[int]:
    """The steps probed: every ``probe_every`` from ``probe_from``, and the last."""
    steps = list(range(recipe.probe_from, recipe.steps, recipe.probe_every))
    return [*steps, recipe.steps]


def choose_snapshots(
    accuracy: dict[int, float], targets: dict[str, float], last: int
) -> dict[str, int]:
    """The snapshot step of each role: ``strong`` the last step; ``weak`` and ``base`` the probed
    steps w < b < last minimising |accuracy(w) - targets["weak"]| + |accuracy(b) -
    targets["base"]| (ties: the earliest).

    Raises:
        ValueError: fewer than two probed steps before the last.
    """
    candidates = sorted(s for s in accuracy if s < last)
    if len(candidates) < 2:
        raise ValueError(f"{len(candidates)} probed step(s) before step {last}; need 2")
    best = min(
        (abs(accuracy[w] - targets["weak"]) + abs(accuracy[b] - targets["base"]), w, b)
        for i, w in enumerate(candidates)
        for b in candidates[i + 1 :]
    )
    return {"weak": best[1], "base": best[2], "strong": last}


def keep(model):
    """A copy of ``model`` as it is now (weights and tied embeddings), to save if chosen."""
    return copy.deepcopy(model)
