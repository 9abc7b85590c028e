"""Every prompt the pipeline sends, versioned. Changing a template means adding a new version.

Open points 3 and 6 of the paper notes: the paper's ICL prompt for the strong model is not
published, so ``ptr_refine_v1`` is ours. The refinement instruction appended at every later round
(in training sequences and at test time) is the paper's: "Please continue thinking and refine your
answer" (https://huggingface.co/papers/2410.13413).
"""

import hashlib
import json

Conversation = list[dict[str, str]]

REFINE_PROMPT = "Please continue thinking and refine your answer."

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
}


def thought_conversation(query: str, template: str) -> Conversation:
    """The weak model's conversation for one query."""
    return [{"role": "user", "content": _template(THOUGHT_TEMPLATES, template).format(query=query)}]


def strong_conversation(
    query: str, thoughts: list[str], previous: list[str], template: str, refine_prompt: str
) -> Conversation:
    """The strong model's conversation at round ``len(previous) + 1``.

    Round 1 sees the query and all weak thoughts; round r > 1 keeps that history, with each
    earlier refinement as an assistant turn followed by ``refine_prompt``.
    """
    drafts = "\n\n".join(f"Draft {i + 1}:\n{t}" for i, t in enumerate(thoughts))
    first = _template(STRONG_TEMPLATES, template).format(
        query=query, n=len(thoughts), drafts=drafts
    )
    conversation = [{"role": "user", "content": first}]
    for answer in previous:
        conversation += [
            {"role": "assistant", "content": answer},
            {"role": "user", "content": refine_prompt},
        ]
    return conversation


def progression_conversation(query: str, steps: list[str], refine_prompt: str) -> Conversation:
    """A PTR training sequence: query, then each step as an assistant turn, the refine prompt between.

    This is also the shape of test-time refinement (see evaluation.rounds), so the model is
    trained on exactly the multi-round format it is evaluated with.
    """
    conversation = [{"role": "user", "content": query}]
    for i, step in enumerate(steps):
        if i:
            conversation.append({"role": "user", "content": refine_prompt})
        conversation.append({"role": "assistant", "content": step})
    return conversation


def prompt_hash(conversation: Conversation) -> str:
    """sha256 of a conversation, for per-row provenance."""
    return hashlib.sha256(json.dumps(conversation, sort_keys=True).encode()).hexdigest()


def render_plain(conversation: Conversation, add_generation_prompt: bool = True) -> str:
    """Plain-text rendering for tokenizers without a chat template (base models)."""
    names = {"user": "Question", "assistant": "Answer", "system": "System"}
    text = "".join(f"{names[m['role']]}: {m['content']}\n" for m in conversation)
    return text + ("Answer:" if add_generation_prompt else "")


def _template(registry: dict[str, str], name: str) -> str:
    if name not in registry:
        raise ValueError(f"unknown prompt template {name!r}; choose one of {sorted(registry)}")
    return registry[name]
