"""The training = inference rule, for every tokenizer family: the ids a training row gives the model
for a conversation prefix are exactly the ids the generator feeds it, and every trained assistant
turn ends with a token generation stops at."""

import re

import pytest
import torch

from ptr_pipeline.conversation import (
    GENERIC_REFINE_TURN,
    REREAD_REFINE_TURN,
    ChatFormat,
    ChatFormatError,
    check_refine_turn,
    progression,
    refine_turn_text,
    refinement_prompt,
)
from ptr_pipeline.engines import Sampling, TransformersGenerator
from ptr_pipeline.schemas import IGNORE_INDEX
from ptr_pipeline_tests.families import FAMILIES, build_model_folder, build_tokenizer

QUERY = "What is two plus two?"
STEPS = ["It is 5.", "No, it is 4.", "The answer is 4."]  # two thoughts, then the answer
WEIGHTS = [0.5, 0.75, 1.0]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("families")
    return {f: build_model_folder(f, root / f) for f in FAMILIES}


def _turns(encoded):
    """(start, end) of each maximal run of supervised positions."""
    runs, start = [], None
    for i, label in enumerate([*encoded.labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = i
        if label == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


@pytest.mark.parametrize("turn", [GENERIC_REFINE_TURN, REREAD_REFINE_TURN])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_training_ids_are_the_generators_ids_and_turns_end_on_a_stop_token(folders, family, turn):
    generator = TransformersGenerator(str(folders[family]), batch_size=1)
    fmt = generator.chat_format
    conversation = progression(QUERY, STEPS, turn)
    encoded = fmt.encode(conversation, WEIGHTS)
    assert len(encoded.input_ids) == len(encoded.labels) == len(encoded.loss_weights)

    # What the generator really feeds the model at each round, captured at the model's input.
    seen: list[list[int]] = []
    hook = generator.lm.register_forward_pre_hook(
        lambda module, args, kwargs: (
            seen.append(kwargs["input_ids"][0].tolist()) if not seen else None
        ),
        with_kwargs=True,
    )
    turns = _turns(encoded)
    assert len(turns) == len(STEPS)
    try:
        for k, (start, end) in enumerate(turns):
            seen.clear()
            prefix = refinement_prompt(QUERY, STEPS[:k], turn)
            generator.generate([prefix], Sampling(max_new_tokens=1))
            assert seen[0] == encoded.input_ids[:start], f"{family} turn {k + 1}"
            # The turn is supervised through a token generation stops at, and nothing after it.
            assert encoded.input_ids[end - 1] in fmt.stop_token_ids
            assert STEPS[k] in fmt.tokenizer.decode(encoded.input_ids[start:end])
            assert set(encoded.loss_weights[start:end]) == {WEIGHTS[k]}
            assert encoded.labels[start:end] == encoded.input_ids[start:end]
    finally:
        hook.remove()
    assert sum(w > 0 for w in encoded.loss_weights) == sum(e - s for s, e in turns)


def test_bos_is_there_once_whoever_adds_it(folders):
    for family in ("llama2", "llama3", "mistral", "base"):
        fmt = ChatFormat.from_pretrained(str(folders[family]))
        bos = fmt.tokenizer.bos_token_id
        ids = fmt.encode(progression(QUERY, ["4"]), [1.0]).input_ids
        prompt = fmt.prompt_ids([{"role": "user", "content": QUERY}])
        assert ids[0] == bos and ids[1] != bos, family  # post-processor or template, never both
        assert prompt[0] == bos and prompt[1] != bos, family
    qwen = ChatFormat.from_pretrained(str(folders["qwen2"]))
    assert qwen.tokenizer.bos_token_id is None


def test_stop_ids_include_the_end_of_turn_and_every_generation_config_eos(folders):
    qwen = ChatFormat.from_pretrained(str(folders["qwen2"]))
    ids = qwen.tokenizer.convert_tokens_to_ids
    assert set(qwen.stop_token_ids) == {ids("<|im_end|>"), ids("<|endoftext|>")}
    llama3 = ChatFormat.from_pretrained(str(folders["llama3"]))
    ids = llama3.tokenizer.convert_tokens_to_ids
    assert set(llama3.stop_token_ids) == {ids("<|eot_id|>"), ids("<|end_of_text|>")}


def test_a_base_model_learns_to_stop(folders):
    """No chat template: Question/Answer text, and the answer ends with the EOS token."""
    fmt = ChatFormat.from_pretrained(str(folders["base"]))
    encoded = fmt.encode(progression(QUERY, ["It is 4."]), [1.0])
    start, end = _turns(encoded)[0]
    assert fmt.tokenizer.decode(encoded.input_ids[start:end]) == " It is 4.</s>"
    assert encoded.input_ids[end - 1] == fmt.tokenizer.eos_token_id
    text = fmt.tokenizer.decode(encoded.input_ids)
    assert text == f"<s>Question: {QUERY}\nAnswer: It is 4.</s>\n"


def test_a_template_whose_turns_end_without_a_stop_token_is_refused():
    tokenizer = build_tokenizer("base")
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
        "{% if add_generation_prompt %}assistant:{% endif %}"
    )
    fmt = ChatFormat(tokenizer)
    with pytest.raises(ChatFormatError, match="holds no token generation stops at"):
        fmt.encode(progression(QUERY, ["4"]), [1.0])


def test_qwen2_answer_stops_at_im_end_not_at_the_eos(tmp_path):
    """A model that writes '7<|im_end|>9' answers 7: generation stops at the end-of-turn token.

    The model is a real Qwen2 whose weights are set by hand to a bigram table (one-hot embeddings,
    attention and MLP outputs zeroed, lm_head mapping each token to its successor)."""
    from transformers import AutoModelForCausalLM

    from ptr_pipeline.evaluation import EvalSettings, evaluate_rounds
    from ptr_pipeline.evaluation.tasks import EvalExample

    tokenizer = build_tokenizer("qwen2")
    folder = tmp_path / "bigram"
    build_model_folder("qwen2", folder)
    vocab = len(tokenizer)
    from transformers import Qwen2Config

    config = Qwen2Config(
        vocab_size=vocab, hidden_size=vocab, intermediate_size=8, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=512,
        tie_word_embeddings=False,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    ids = tokenizer.convert_tokens_to_ids
    newline = tokenizer("\n", add_special_tokens=False)["input_ids"][-1]
    seven, nine = (tokenizer(t, add_special_tokens=False)["input_ids"][0] for t in ("7", "9"))
    successor = {
        newline: seven,
        seven: ids("<|im_end|>"),
        ids("<|im_end|>"): nine,
        nine: ids("<|endoftext|>"),
    }
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.model.embed_tokens.weight.copy_(torch.eye(vocab))
        model.model.norm.weight.fill_(1.0)
        for token in range(vocab):
            model.lm_head.weight[successor.get(token, ids("<|endoftext|>")), token] = 1.0
    model.generation_config.eos_token_id = [ids("<|endoftext|>")]  # as Qwen2 base ships
    model.save_pretrained(folder)

    generator = TransformersGenerator(str(folder))
    example = EvalExample("x", "q", "What is 3 + 4?", "7")
    settings = EvalSettings(
        num_rounds=1,
        max_new_tokens=6,
        extraction={"gsm8k": "flexible"},
    )  # a bare "7": read by the flexible extraction
    table = evaluate_rounds(
        [example], "gsm8k", generator, settings, "base", "m", GENERIC_REFINE_TURN
    )
    row = table.to_pylist()[0]
    assert row["response"] == "7" and row["correct"]


def test_a_stop_token_written_inside_an_answer_ends_its_supervision():
    """'7<|im_end|>9' as an answer: the tokenizer reads the special token, generation would stop
    there, so only '7<|im_end|>' is trained; '9' is context."""
    fmt = ChatFormat(build_tokenizer("qwen2"))
    encoded = fmt.encode(progression(QUERY, ["7<|im_end|>9"]), [1.0])
    ((start, end),) = _turns(encoded)
    assert fmt.tokenizer.decode(encoded.input_ids[start:end]) == "7<|im_end|>"
    assert encoded.cut_turns == 1
    assert sum(t in fmt.stop_token_ids for t in encoded.input_ids[start:end]) == 1
    clean = fmt.encode(progression(QUERY, ["7"]), [1.0])
    assert clean.cut_turns == 0


def test_a_template_that_ignores_the_generation_prompt_is_refused():
    tokenizer = build_tokenizer("qwen2")
    tokenizer.chat_template = (  # ChatML without the add_generation_prompt block
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    )
    with pytest.raises(ChatFormatError, match="ignores add_generation_prompt"):
        ChatFormat(tokenizer).encode(progression(QUERY, ["4"]), [1.0])


def test_a_template_that_raises_is_a_chat_format_error():
    tokenizer = build_tokenizer("qwen2")
    tokenizer.chat_template = "{{ raise_exception('System message required') }}"
    with pytest.raises(ChatFormatError, match="refused the conversation: System message required"):
        ChatFormat(tokenizer).prompt_ids([{"role": "user", "content": QUERY}])


@pytest.mark.parametrize(
    "template",
    [
        GENERIC_REFINE_TURN,
        REREAD_REFINE_TURN,
        "Check again; put the result in \\boxed{{}}:\n\n{query}",
        "Is \\boxed{{\\frac{{1}}{{2}}}} right for {query}? And for {query} again?",
    ],
)
def test_a_refine_turn_with_query_and_latex_braces_is_accepted(template):
    assert check_refine_turn(template) == template
    query = "What is {2} + 3?"  # braces in the question are its own
    text = refine_turn_text(template, query)
    assert text.count(query) == template.count("{query}")
    unescaped = template.replace("{{", "{").replace("}}", "}")  # literal braces written once
    assert text == unescaped.replace("{query}", query)


@pytest.mark.parametrize(
    ("template", "fault"),
    [
        ("  \n", "blank"),
        ("\u200b", "blank"),  # no visible character
        ("Refine {query", "expected '}' before end of string"),
        ("Refine query}", "Single '}'"),
        ("} {query} {", "Single '}'"),
        ("Go {a{query}b}", "unexpected '{' in field name"),
        ("Refine {}", "names {}"),
        ("Refine {0}", "names {0}"),
        ("Refine {query}{answer}", "names {answer}"),
        ("Refine \\boxed{}", "names {}"),  # a literal brace is {{
        ("Refine {foo} and {query}", "names {foo}"),
        ("Refine {QUERY}", "names {QUERY}"),
        ("Refine {query!r}", "only the bare {query}"),
        ("Refine {query:>9}", "only the bare {query}"),
        ("Refine {query.upper}", "names {query.upper}"),
        ("Refine { query }", "names { query }"),
        ("Refine {{query}}", "a literal '{query}'"),
    ],
)
def test_a_mistyped_refine_turn_is_refused_naming_the_fault(template, fault):
    with pytest.raises(ValueError, match=re.escape(fault)):
        check_refine_turn(template)
