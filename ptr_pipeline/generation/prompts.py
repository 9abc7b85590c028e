"""The generation stages' prompt templates, versioned. Changing a template means adding a version.

Open points 3 and 6 of docs/paper_notes.md: the paper's ICL prompt for the strong model is not
published, so ``ptr_refine_v1`` is ours. The refine turn between later rounds is the stage's
``refine_turn`` (``conversation``'s templates; the one the dataset's rows record and training and
evaluation then use), and the multi-round layout is ``conversation``'s, shared with training and
evaluation.
"""

import hashlib
import json

from ptr_pipeline.conversation import Conversation, refinement_prompt

THOUGHT_TEMPLATES = {
    # The weak model drafts an answer to the bare query.
    "ptr_thought_v1": "{query}",
}

STRONG_TEMPLATES = {
    # Round 1 of the strong model: the query and every weak draft, in context.
    "ptr_refine_v1": (
        "Below is a question and {n} draft answer(s) written by a less capable assistant. "
        "Read them, keep what is right, fix what is wrong, and write one improved, complete "
        "answer. Reply with the answer only.\n\n"
        "Question:\n{query}\n\n{drafts}"
    ),
    # The drafts first and the question last, as it would be asked alone: a model then reads
    # the question at the same distance from its answer as without drafts (the world's
    # models learn one layout, not two: docs/world.md).
    "ptr_refine_v2": (
        "Below are {n} draft answer(s) written by a less capable assistant, then a question. "
        "Keep what is right, fix what is wrong, and write one improved, complete answer.\n\n"
        "{drafts}\n\n{query}"
    ),
}


def thought_conversation(query: str, template: str) -> Conversation:
    """The weak model's conversation for one query."""
    return [{"role": "user", "content": _template(THOUGHT_TEMPLATES, template).format(query=query)}]


def strong_conversation(
    query: str, thoughts: list[str], previous: list[str], template: str, refine_turn: str
) -> Conversation:
    """The strong model's conversation at round ``len(previous) + 1``.

    Round 1 sees the query and all weak thoughts; round r > 1 keeps that history, with each
    earlier refinement as an assistant turn followed by the refine turn (``refine_turn`` with
    ``{query}`` filled by the bare query, not the drafts).
    """
    drafts = "\n\n".join(f"Draft {i + 1}:\n{t}" for i, t in enumerate(thoughts))
    first = _template(STRONG_TEMPLATES, template).format(
        query=query, n=len(thoughts), drafts=drafts
    )
    return refinement_prompt(first, previous, refine_turn, query=query)


def prompt_hash(conversation: Conversation) -> str:
    """sha256 of a conversation, for per-row provenance."""
    return hashlib.sha256(json.dumps(conversation, sort_keys=True).encode()).hexdigest()


def _template(registry: dict[str, str], name: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown prompt template {name!r}; choose one of {sorted(registry)}")
    return registry[name]
