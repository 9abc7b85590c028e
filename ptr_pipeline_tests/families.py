"""Tokenizers built locally to mimic the model families users bring, each saved with a tiny model.

Nothing is downloaded: each tokenizer is a ``tokenizers`` BPE trained here on a small corpus, with
the special tokens, pre-tokenizer, post-processor and chat template of its family (taken from the
public tokenizer configs of those models), saved with ``save_pretrained`` next to a tiny random
Llama or Qwen2 model so that it loads through ``from_pretrained`` like a real checkpoint.
"""

from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

CORPUS = [
    "What is two plus two? The answer is 4.",
    "Please continue thinking and refine your answer.",
    "Question: How many legs does a spider have? Answer: A spider has 8 legs.",
    "Explain photosynthesis to a child in one sentence.",
    "Plants make food from sunlight, water and air.",
    "It is 5. No, it is 4. The answer is 7.",
    "user assistant system",
    "[INST] What is it? [/INST]",
] * 20

LLAMA2_TEMPLATE = (  # Llama-2-chat's layout, without {{ bos_token }}: BOS comes from the post-processor
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] | trim }} [/INST]"
    "{% elif m['role'] == 'assistant' %} {{ m['content'] | trim }} {{ eos_token }}{% endif %}"
    "{% endfor %}"
)
LLAMA3_TEMPLATE = (  # Meta-Llama-3-Instruct: BOS in the template, <|eot_id|> ends every turn
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] | trim }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
CHATML_TEMPLATE = (  # Qwen2: ChatML; the EOS is <|endoftext|>, turns end with <|im_end|>
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
MISTRAL_TEMPLATE = (  # Mistral-Instruct: the answer joined straight onto [/INST]
    "{{ bos_token }}{% for m in messages %}"
    "{% if m['role'] == 'user' %}[INST] {{ m['content'] }}[/INST]"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
)

# family -> (pre-tokenizer style, special tokens, bos, eos, BOS from post-processor, template,
#            generation_config eos ids as token strings)
FAMILIES = {
    "llama2": ("metaspace", ["<unk>", "<s>", "</s>"], "<s>", "</s>", True, LLAMA2_TEMPLATE, ["</s>"]),
    "llama3": (
        "bytelevel",
        ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
        "<|begin_of_text|>", "<|eot_id|>", True, LLAMA3_TEMPLATE, ["<|end_of_text|>", "<|eot_id|>"],
    ),
    "qwen2": (
        "bytelevel", ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], None, "<|endoftext|>", False,
        CHATML_TEMPLATE, ["<|endoftext|>"],
    ),
    "mistral": (
        "metaspace", ["<unk>", "<s>", "</s>", "[INST]", "[/INST]"], "<s>", "</s>", False,
        MISTRAL_TEMPLATE, ["</s>"],
    ),
    "base": ("bytelevel", ["<s>", "</s>", "<pad>"], "<s>", "</s>", True, None, ["</s>"]),
}  # fmt: skip


def build_tokenizer(family: str) -> PreTrainedTokenizerFast:
    style, specials, bos, eos, bos_from_post_processor, template, _ = FAMILIES[family]
    tok = Tokenizer(models.BPE(unk_token="<unk>" if "<unk>" in specials else None))
    if style == "metaspace":  # SentencePiece-style: "▁" marks a word start; no merge across words
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        alphabet = sorted({c for text in CORPUS for c in text} | {"▁", "\n"})
    else:  # GPT-2 / Llama-3 / Qwen2 byte-level BPE
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=alphabet, show_progress=False
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    if bos_from_post_processor:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A",
            pair=f"{bos} $A {bos} $B",
            special_tokens=[(bos, tok.token_to_id(bos))],
        )
    kwargs = {"bos_token": bos, "eos_token": eos}
    if "<unk>" in specials:
        kwargs["unk_token"] = "<unk>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=template, **kwargs)


def build_model_folder(family: str, folder: Path) -> Path:
    """A tokenizer of ``family`` and a tiny random model saved together in ``folder``."""
    tokenizer = build_tokenizer(family)
    config_cls = Qwen2Config if family == "qwen2" else LlamaConfig
    config = config_cls(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, max_position_embeddings=512,
    )  # fmt: skip
    model = AutoModelForCausalLM.from_config(config)
    model.generation_config = GenerationConfig(
        eos_token_id=[tokenizer.convert_tokens_to_ids(t) for t in FAMILIES[family][6]]
    )
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
