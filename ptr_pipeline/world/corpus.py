"""The world's pretraining corpus: conversations rendered by the stages' own code.

Each conversation is a task prompt (``prompt_of``: ``evaluation.tasks``, exactly what evaluation
asks) -> the solution (``tasks.response``). A share ``icl_fraction`` of them asks in the strong
stage's prompt instead (``generation.prompts.strong_conversation`` with the recipe's
``refine_template``: one or two hurried drafts, ``tasks.Problem.draft_steps``, then the
question), as an instruction-tuned model would know such prompts. Models that never saw drafts
answered that prompt with noise, and models taught it only after pretraining copied the drafts'
digits (docs/world.md).

No conversation is the multi-turn refinement of test time ("Please continue thinking and refine
your answer."): that is what PTR training has to teach, and why the base model prompted to refine
is the paper's prompting baseline. No conversation states a held-out eval problem.
"""

import random
from dataclasses import dataclass

from ptr_pipeline.conversation import Conversation
from ptr_pipeline.world import tasks
from ptr_pipeline.world.recipe import WorldRecipe

PLAIN = "plain"  # the layout of a conversation that asks the question alone


@dataclass(frozen=True)
class CorpusRow:
    conversation: Conversation  # user turn(s), then the assistant's right solution
    layout: str  # PLAIN, or the draft prompt's template (``recipe.refine_template``)


def prompt_of(task: str, row: dict, index: int) -> str:
    """What evaluation asks for ``row`` (the eval stage's own parser renders it); the corpus and
    the query pool (``world.data``) ask in it."""
    from ptr_pipeline.evaluation.tasks import TASKS
    from ptr_pipeline.records import Record

    return TASKS[task].parse(Record(row, "world", index + 1), index).prompt


def corpus(
    recipe: WorldRecipe,
    split: tasks.Split,
    n: int,
    stream: str = "corpus",
    icl_fraction: float | None = None,
) -> list[CorpusRow]:
    """``n`` pretraining conversations drawn from ``stream`` (see the module docstring), none on
    a held-out problem of ``split``; a share ``icl_fraction`` (default: the recipe's) in the
    strong stage's draft prompt. A pure function of its arguments."""
    from ptr_pipeline.generation.prompts import strong_conversation

    share = recipe.icl_fraction if icl_fraction is None else icl_fraction
    # Its own generator, seeded like the stream's draw: which rows ask with drafts, and the drafts.
    rng = random.Random(f"world-{stream}-{recipe.seed}")
    rows = []
    items = tasks.train_rows(split, stream, n, recipe.seed, recipe.operands, distinct=False)
    for i, item in enumerate(items):
        right = tasks.response(item.task, item.row, *item.problem.steps())
        prompt = prompt_of(item.task, item.row, i)
        layout = PLAIN
        if rng.random() < share:
            drafts = [
                tasks.response(
                    item.task, item.row, *item.problem.draft_steps(rng, recipe.draft_slip_rate)
                )
                for _ in range(rng.choice([1, 2]))
            ]
            layout = recipe.refine_template
            user = strong_conversation(prompt, drafts, [], layout, "")
        else:
            user = [{"role": "user", "content": prompt}]
        rows.append(CorpusRow([*user, {"role": "assistant", "content": right}], layout))
    return rows
