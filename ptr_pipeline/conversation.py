"""The one owner of how a conversation becomes token ids, for training and for inference alike.

PTR trains and evaluates on the same multi-round shape (docs/paper_notes.md, sections 3.2 and 4):
the query as a user turn, each step (weak thought, strong round, model answer) as an assistant
turn, and the refine prompt as a user turn before every later step. ``progression`` builds that
conversation; ``ChatFormat`` turns conversations into token ids with the model's own chat template
(transformers' ``apply_chat_template``) and tokenizer, and knows which ids end a turn.

The rule this module exists for: for any tokenizer, the ids a training row gives the model for a
conversation prefix are exactly the ids a generator gives it for that prefix (``prompt_ids``), and
the token that ends a trained assistant turn is one that generation stops at (``stop_token_ids``).
``encode`` tokenizes the whole rendered conversation once, then checks the rule at every assistant
turn and raises ``ChatFormatError`` where a tokenizer or template breaks it, rather than training on
ids inference never produces.

- A tokenizer without a chat template (a base model) gets ``PLAIN_CHAT_TEMPLATE``
  (``Question: ...`` / ``Answer: ...``), whose assistant turns end with the EOS token, so a trained
  base model learns to stop.
- Tokens a tokenizer adds on its own before the text (the ``<s>`` of a Llama-2 post-processor)
  are added to every encoding unless the rendered text already starts with them (Llama-3 puts
  ``<|begin_of_text|>`` in its template); tokens it would append after the text are never added.
- Stop ids: the tokenizer's EOS, every id of the model's ``generation_config.eos_token_id``, and
  the template's end-of-turn token (the first special token after an assistant message, such as
  ChatML's ``<|im_end|>`` when the EOS is ``<|endoftext|>``, as Qwen2 base checkpoints ship).
"""

import functools
import logging
import string
from dataclasses import dataclass

from ptr_pipeline.schemas import IGNORE_INDEX

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]

# The refine turn: the user turn before every later step, in training sequences, in the strong
# stage's later rounds and at test time (docs/paper_notes.md, section 4). It is a template in which
# ``{query}`` stands for the question as first asked; ``refine_turn_text`` fills it in.
#
# GENERIC_REFINE_TURN is the paper's instruction, the default for real models. REREAD_REFINE_TURN
# restates the question (re-reading: Xu et al. 2023, "Re-Reading Improves Reasoning in Large
# Language Models", arXiv 2309.06275); it is the miniature world's default, whose models find a
# question only when it ends the prompt (docs/world.md).
GENERIC_REFINE_TURN = "Please continue thinking and refine your answer."
REREAD_REFINE_TURN = "Please continue thinking and refine your answer to:\n\n{query}"

QUERY_FIELD = "{query}"
_FORMATTER = string.Formatter()  # Python's format-string grammar: the rule for refine turns


def check_refine_turn(template: str) -> str:
    """``template`` if it can be a refine turn; raises ValueError naming the fault otherwise (the
    settings validators and ``refine --refine-turn`` call it before anything runs).

    The rule is Python's format-string grammar (``str.format``): ``{query}`` is the one field (the
    question as first asked), ``{{`` and ``}}`` are literal braces (``\\boxed{{}}``). Refused: a
    turn with no visible character; an unbalanced or stray brace (``Refine {query``); any other
    field (``{foo}``, ``{0}``, ``{}``, ``{answer}``); a conversion or format spec on the field
    (``{query!r}``, ``{query:>9}``) or an attribute or index of it (``{query.upper}``); and
    ``{{query}}`` (Jinja's way, a literal "{query}" here).
    """
    if not any(char.isprintable() and not char.isspace() for char in template):
        raise ValueError(f"the refine turn {template!r} is blank")
    literal = " (write {{ and }} for a literal brace)"
    try:
        parsed = list(_FORMATTER.parse(template))
    except ValueError as e:
        raise ValueError(f"the refine turn {template!r}: {e}{literal}") from None
    if QUERY_FIELD in "".join(text for text, *_ in parsed):  # {{query}}: Jinja's, not a field
        raise ValueError(
            f"the refine turn {template!r} writes {{{{query}}}}, a literal '{{query}}' in Python's "
            f"format grammar; write {QUERY_FIELD}"
        )
    fields = [(name, spec, conv) for _, name, spec, conv in parsed if name is not None]
    for name, spec, conversion in fields:
        field = (
            "{"
            + name
            + (f"!{conversion}" if conversion else "")
            + (f":{spec}" if spec else "")
            + "}"
        )
        if name != "query":
            raise ValueError(
                f"the refine turn {template!r} names {field}; only {QUERY_FIELD} is filled in "
                f"(the question as first asked){literal}"
            )
        if spec or conversion:
            raise ValueError(
                f"the refine turn {template!r} writes {field}; only the bare {QUERY_FIELD} is "
                "filled in"
            )
    return template


def refine_turn_text(template: str, query: str) -> str:
    """The refine turn for ``query``: ``template`` (checked by ``check_refine_turn``) with
    ``{query}`` filled in by ``str.format``, so ``{{`` and ``}}`` give literal braces."""
    return template.format(query=query)


# For tokenizers without a chat template. "Answer:" is the generation prompt; an assistant turn
# is "Answer:" + " " + content + EOS, so the prompt is a prefix of the trained turn.
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}Answer: {{ m['content'] }}{{ eos_token }}\n"
    "{% elif m['role'] == 'system' %}{{ m['content'] }}\n\n"
    "{% else %}Question: {{ m['content'] }}\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}Answer:{% endif %}"
)

_PROBE = "ptr probe answer"  # assistant content used to find the template's end-of-turn token


class ChatFormatError(ValueError):
    """A tokenizer or chat template breaks the training = inference rule (see module docstring)."""


class PromptTooLongError(ValueError):
    """A prompt (with the tokens it may still generate) does not fit the model's context."""


def progression(
    query: str, steps: list[str], refine_turn: str = GENERIC_REFINE_TURN
) -> Conversation:
    """The PTR conversation: ``query`` as the user turn, then every step as an assistant turn,
    the refine turn (``refine_turn`` with ``{query}`` filled in) as the user turn before each step
    after the first."""
    turn = refine_turn_text(refine_turn, query)
    conversation = [{"role": "user", "content": query}]
    for i, step in enumerate(steps):
        if i:
            conversation.append({"role": "user", "content": turn})
        conversation.append({"role": "assistant", "content": step})
    return conversation


def refinement_prompt(
    first_turn: str,
    previous: list[str],
    refine_turn: str = GENERIC_REFINE_TURN,
    query: str | None = None,
) -> Conversation:
    """The conversation a model continues at round ``len(previous) + 1`` of test-time refinement:
    ``first_turn`` as the user turn, each earlier answer as an assistant turn, and the refine turn
    after each of them. ``query`` fills the turn's ``{query}``: the question as first asked
    (default ``first_turn``; the strong stage passes the bare query, as its first turn also
    shows the drafts)."""
    turn = refine_turn_text(refine_turn, first_turn if query is None else query)
    conversation = [{"role": "user", "content": first_turn}]
    for answer in previous:
        conversation.append({"role": "assistant", "content": answer})
        conversation.append({"role": "user", "content": turn})
    return conversation


@dataclass(frozen=True)
class Encoded:
    """One training sequence, aligned position by position (transformers' causal-LM convention:
    ``labels`` are the inputs themselves, shifted inside the loss)."""

    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX where nothing is supervised
    loss_weights: list[float]  # 0.0 wherever labels is IGNORE_INDEX
    turns: list[int]  # 1..n: the assistant turn a token belongs to (n = the answer); 0 = context
    cut_turns: int = 0  # supervised turns whose text holds a stop token: supervised up to it


class ChatFormat:
    """A model's conversation format: chat template, special tokens, stop ids, context length.

    Args:
        tokenizer: a transformers tokenizer.
        eos_token_ids: the model's ``generation_config.eos_token_id`` (int or list), if known.
        context_length: the model's maximum sequence length in tokens, if known.
    """

    def __init__(
        self,
        tokenizer,
        eos_token_ids: int | list[int] | None = None,
        context_length: int | None = None,
    ):
        self.tokenizer = tokenizer
        self.template = tokenizer.chat_template or PLAIN_CHAT_TEMPLATE
        self.context_length = context_length
        self._overheads: dict[str, int] = {}
        self._prefix_ids = _prefix_special_ids(tokenizer)
        self._special_ids = _special_ids(tokenizer)
        stop = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
        if isinstance(eos_token_ids, int):
            eos_token_ids = [eos_token_ids]
        stop.update(eos_token_ids or [])
        self.end_of_turn_id = self._end_of_turn_id()
        if self.end_of_turn_id is not None:
            stop.add(self.end_of_turn_id)
        if not stop:
            raise ChatFormatError(
                f"{tokenizer.name_or_path}: no EOS token and no end-of-turn token in the chat "
                "template; generation could never stop"
            )
        self.stop_token_ids: tuple[int, ...] = tuple(sorted(stop))

    @classmethod
    def from_pretrained(cls, path: str) -> "ChatFormat":
        """Load the tokenizer, the generation config's EOS ids and the context length of ``path``
        (a local folder or a hub id), without loading the weights."""
        from transformers import AutoConfig, AutoTokenizer, GenerationConfig

        tokenizer = AutoTokenizer.from_pretrained(path)
        config = AutoConfig.from_pretrained(path)
        try:
            eos = GenerationConfig.from_pretrained(path).eos_token_id
        except OSError:  # no generation_config.json: the model config's own EOS
            eos = getattr(config, "eos_token_id", None)
        context = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        return cls(tokenizer, eos, context)

    # --- rendering

    def render(self, conversation: Conversation, add_generation_prompt: bool) -> str:
        """The conversation as text, by the chat template (transformers' ``apply_chat_template``).

        Raises:
            ChatFormatError: the template refuses the conversation (``raise_exception``).
        """
        try:
            return self.tokenizer.apply_chat_template(
                conversation,
                chat_template=self.template,
                tokenize=False,
                add_generation_prompt=add_generation_prompt,
            )
        except Exception as e:  # jinja2's TemplateError, or whatever the template raises
            raise ChatFormatError(
                f"{self._name}: the chat template refused the conversation: {e}"
            ) from e

    def _ids(self, text: str, offsets: bool = False):
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=offsets)
        ids = list(enc["input_ids"])
        spans = list(enc["offset_mapping"]) if offsets else []
        n = len(self._prefix_ids)
        if n and ids[:n] != self._prefix_ids:
            ids = self._prefix_ids + ids
            spans = [(0, 0)] * n + spans
        return (ids, spans) if offsets else ids

    def prompt_ids(self, conversation: Conversation) -> list[int]:
        """The ids a generator feeds the model to continue ``conversation`` as the assistant."""
        return self._ids(self.render(conversation, add_generation_prompt=True))

    # --- training

    def encode(self, conversation: Conversation, turn_weights: list[float]) -> Encoded:
        """Token ids, labels and loss weights of a conversation that ends with an assistant turn.

        The whole rendered conversation is tokenized once. Assistant turn ``k`` is supervised
        from the end of its generation prompt through the first stop token after it, with weight
        ``turn_weights[k]`` (0 = context only); everything else is context. ``turns`` numbers
        the tokens of that span k + 1 whatever its weight, 0 elsewhere. When a turn's text itself
        holds a stop token (ChatML or ``</s>`` written inside an answer, which the tokenizer
        reads as the special token), generation would stop there: the turn is supervised up to
        that token only, the rest is context, and ``cut_turns`` counts it.

        Raises:
            ChatFormatError: the template refuses the conversation or is not prefix-stable, it
                puts text other than white space between the generation prompt and the content
                (it ignores ``add_generation_prompt``: the model would learn the role header), a
                turn's prompt ids are not a prefix of the sequence (the tokenizer merges across
                the boundary), or a turn ends without a stop token.
            ValueError: ``turn_weights`` does not have one weight per assistant turn.
        """
        turns = [i for i, m in enumerate(conversation) if m["role"] == "assistant"]
        if len(turns) != len(turn_weights):
            raise ValueError(f"{len(turns)} assistant turns but {len(turn_weights)} weights")
        full = self.render(conversation, add_generation_prompt=False)
        ids, spans = self._ids(full, offsets=True)
        labels = [IGNORE_INDEX] * len(ids)
        weights = [0.0] * len(ids)
        turn_of = [0] * len(ids)
        cut = 0
        for number, (i, weight) in enumerate(zip(turns, turn_weights, strict=True), start=1):
            prompt = self.render(conversation[:i], add_generation_prompt=True)
            turn = self.render(conversation[: i + 1], add_generation_prompt=False)
            if not (turn.startswith(prompt) and full.startswith(turn)):
                raise ChatFormatError(
                    f"{self._name}: the chat template is not prefix-stable at assistant turn "
                    f"{turns.index(i) + 1}; training and inference would see different text"
                )
            prompt_ids = self._ids(prompt)  # exactly prompt_ids(conversation[:i]), rendered once
            start = len(prompt_ids)
            if ids[:start] != prompt_ids:
                raise ChatFormatError(
                    f"{self._name}: tokenizing the whole conversation merges tokens across the "
                    f"start of assistant turn {turns.index(i) + 1}; its ids would differ from the "
                    "ids a generator sees"
                )
            content = conversation[i]["content"].strip()
            at = turn.find(content, len(prompt)) if content else -1
            if at >= 0 and turn[len(prompt) : at].strip():
                raise ChatFormatError(
                    f"{self._name}: the chat template puts {turn[len(prompt) : at]!r} between the "
                    "generation prompt and the assistant's text (it ignores add_generation_prompt); "
                    "the model would be trained to write the role header itself"
                )
            content_end = at + len(content) if at >= 0 else len(prompt)
            end = self._turn_end(ids, spans, start, content_end, len(turn))
            if end is not None and spans[end][0] < content_end and weight > 0:
                cut += 1  # a stop token inside the text: generation ends there
            if end is None:
                raise ChatFormatError(
                    f"{self._name}: assistant turn {turns.index(i) + 1} ends with "
                    f"{turn[content_end:]!r}, which holds no token generation stops at "
                    f"(stop ids {list(self.stop_token_ids)})"
                )
            turn_of[start : end + 1] = [number] * (end + 1 - start)
            if weight > 0:
                for t in range(start, end + 1):
                    labels[t] = ids[t]
                    weights[t] = weight
        return Encoded(ids, labels, weights, turn_of, cut)

    def _turn_end(self, ids, spans, start: int, content_end: int, turn_end: int) -> int | None:
        """Index of the first stop token of the turn (None when the turn ends without one)."""
        for t in range(start, len(ids)):
            begin, _ = spans[t]
            if begin >= turn_end and t > start:
                return None
            if ids[t] in self.stop_token_ids:
                return t
        return None

    # --- lengths

    def tokens_needed(
        self,
        conversation: Conversation,
        rounds: int,
        max_new_tokens: int,
        refine_turn: str = GENERIC_REFINE_TURN,
        query: str | None = None,
    ) -> int:
        """Upper bound on the context ``rounds`` generations need, starting from ``conversation``:
        its prompt, ``max_new_tokens`` per round, and the refine turn between rounds (``{query}``
        filled with ``query``, default the conversation's first user turn)."""
        base = len(self.prompt_ids(conversation))
        if rounds <= 1:
            return base + max_new_tokens
        if query is None:
            query = conversation[0]["content"]
        overhead = self._refine_overhead(refine_turn_text(refine_turn, query))
        return base + rounds * max_new_tokens + (rounds - 1) * overhead

    def _refine_overhead(self, turn: str) -> int:
        """Tokens a refine round adds besides the answer: the end of the answer's turn, the refine
        turn ``turn`` (filled in) and the next generation prompt (the template's)."""
        if turn not in self._overheads:
            if len(self._overheads) > 4096:  # filled-in turns differ per query: bound the cache
                self._overheads.clear()
            start = [{"role": "user", "content": "x"}]
            follow = [*start, {"role": "assistant", "content": ""},
                      {"role": "user", "content": turn}]  # fmt: skip
            self._overheads[turn] = len(self.prompt_ids(follow)) - len(self.prompt_ids(start))
        return self._overheads[turn]

    def check_fits(
        self,
        conversations: list[tuple[str, Conversation]] | list[tuple[str, Conversation, str]],
        rounds: int,
        max_new_tokens: int,
        refine_turn: str = GENERIC_REFINE_TURN,
    ) -> None:
        """Refuse, before any model loads, prompts that cannot fit the model's context.

        Args:
            conversations: (name for the error message, conversation) pairs, or triples with the
                question that fills the refine turn's ``{query}`` (default: the conversation's
                first user turn).
            rounds: generations that continue each conversation (refinement rounds).
            max_new_tokens: the most tokens one generation may add.
            refine_turn: the refine turn's template (``{query}`` filled in per conversation).

        Raises:
            PromptTooLongError: naming the first conversation that does not fit.
        """
        if not self.context_length:
            return
        floor = self.tokens_needed(
            [{"role": "user", "content": ""}], rounds, max_new_tokens, refine_turn
        )
        if floor > self.context_length:  # the settings, not the data, are at fault
            raise PromptTooLongError(
                f"max_new_tokens={max_new_tokens} over {rounds} round(s) needs at least {floor} "
                f"tokens even for an empty prompt, more than the model's context of "
                f"{self.context_length}; lower max_new_tokens or the number of rounds"
            )
        # A token covers at most max_token_chars characters (x4 for Unicode normalisation), so a
        # longer prompt cannot fit: refused without tokenizing megabytes.
        max_chars = 4 * self._max_token_chars * self.context_length
        for name, conversation, *query in conversations:
            chars = sum(len(m["content"]) for m in conversation)
            if chars > max_chars:
                raise PromptTooLongError(
                    f"{name}: {chars:,} characters, far more than the model's context of "
                    f"{self.context_length} tokens; shorten it or drop it"
                )
            needed = self.tokens_needed(
                conversation, rounds, max_new_tokens, refine_turn, *query[:1]
            )
            if needed > self.context_length:
                raise PromptTooLongError(
                    f"{name}: needs up to {needed} tokens ({rounds} round(s) of at most "
                    f"{max_new_tokens} new tokens), more than the model's context of "
                    f"{self.context_length}; shorten it or drop it"
                )

    # --- internals

    @functools.cached_property
    def _max_token_chars(self) -> int:
        return max(len(t) for t in self.tokenizer.get_vocab())

    @property
    def _name(self) -> str:
        return getattr(self.tokenizer, "name_or_path", "") or type(self.tokenizer).__name__

    def _end_of_turn_id(self) -> int | None:
        probe = [{"role": "user", "content": "x"}, {"role": "assistant", "content": _PROBE}]
        try:
            text = self.render(probe, add_generation_prompt=False)
        except (
            ChatFormatError
        ):  # a template that rejects the probe: rely on EOS / generation config
            return None
        at = text.find(_PROBE)
        if at < 0:
            return None
        ids, spans = self._ids(text, offsets=True)
        after = at + len(_PROBE)
        for token, (begin, _) in zip(ids, spans, strict=True):
            if begin >= after and token in self._special_ids:
                return token
        return None


def _special_ids(tokenizer) -> set[int]:
    ids = set(tokenizer.all_special_ids)
    ids.update(i for i, token in tokenizer.added_tokens_decoder.items() if token.special)
    return ids


def _prefix_special_ids(tokenizer) -> list[int]:
    """The ids the tokenizer's post-processor puts before any text (such as Llama-2's ``<s>``)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []
