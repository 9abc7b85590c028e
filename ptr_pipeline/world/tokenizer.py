"""The world's tokenizer: a byte-level BPE (``tokenizers``) trained on the corpus, digits split one
per token (``pre_tokenizers.Digits``), with the ChatML template and ``<|im_end|>`` as EOS
(``models.train_chat_tokenizer``, the tiny models' builder too)."""

from ptr_pipeline.conversation import Conversation
from ptr_pipeline.models import train_chat_tokenizer

TRAINING_CONVERSATIONS = 5000  # the corpus's first conversations train the vocabulary


def build_tokenizer(conversations: list[Conversation], vocab_size: int):
    """A ``PreTrainedTokenizerFast`` of at most ``vocab_size`` tokens (the special tokens
    included), trained on every message of the first ``TRAINING_CONVERSATIONS`` conversations."""
    texts = [m["content"] for c in conversations[:TRAINING_CONVERSATIONS] for m in c]
    return train_chat_tokenizer(texts, vocab_size, split_digits=True)
