"""Prompts as words: which token positions belong to which word, for word-level attention editing.

`PromptTokens` holds a prompt's token ids over the condition's padded length, each token's word index
(None for start, end and padding tokens), the words' texts (lower case) and each token's text for labels.
Text encoders build it with their tokenizer's own notion of a word, `encoder.prompt_tokens(prompt, length)`:

- `from_word_ids`: fast (Rust) tokenizers report each token's word and the word's character span;
- `from_word_ends`: BPE vocabularies that mark the last piece of a word with a suffix (CLIP's "</w>"); the
  tokenizer's own pre-splitting (lower case, punctuation apart) decides where words are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PromptTokens:
    """A tokenized prompt: ids, word index per token (None for special tokens), words' texts, tokens' texts."""

    ids: list[int]
    word_ids: list[int | None]
    words: list[str]
    pieces: list[str]

    def positions(self, wanted: set[str]) -> list[int]:
        """Token positions of the words in `wanted` (lower case, punctuation ignored)."""
        return [p for p, w in enumerate(self.word_ids) if w is not None and self.words[w] in wanted]


def _padded(tokenizer, prompt: str, length: int):
    return tokenizer(prompt, padding="max_length", truncation=True, max_length=length)


def from_word_ids(tokenizer, prompt: str, length: int) -> PromptTokens:
    """Words as a fast tokenizer's pre-tokenizer splits them (`word_ids`, `word_to_chars`)."""
    encoding = _padded(tokenizer, prompt, length)
    word_ids = list(encoding.word_ids())
    words: list[str] = []
    for word in range(max((w for w in word_ids if w is not None), default=-1) + 1):
        span = encoding.word_to_chars(word)
        words.append(prompt[span.start:span.end].lower() if span is not None else "")
    ids = list(encoding["input_ids"])
    return PromptTokens(ids, word_ids, words, tokenizer.convert_ids_to_tokens(ids))


def from_word_ends(tokenizer, prompt: str, length: int, suffix: str = "</w>") -> PromptTokens:
    """Words of a BPE tokenizer whose word-final pieces end in `suffix`. Padding (attention mask 0) and the
    tokens the tokenizer adds around every prompt (CLIP's start and end) belong to no word."""
    encoding = _padded(tokenizer, prompt, length)
    ids = list(encoding["input_ids"])
    added = set(tokenizer("").input_ids)  # what the tokenizer puts around every prompt
    pieces = tokenizer.convert_ids_to_tokens(ids)
    word_ids: list[int | None] = []
    words: list[str] = []
    current: list[int] = []
    for token, piece, real in zip(ids, pieces, encoding["attention_mask"], strict=True):
        if not real or token in added:
            word_ids.append(None)
            continue
        word_ids.append(len(words))
        current.append(token)
        if piece.endswith(suffix):
            words.append(tokenizer.decode(current).strip().lower())
            current = []
    if current:  # a word cut by truncation
        words.append(tokenizer.decode(current).strip().lower())
    labels = [tokenizer.decode([token]).strip() or piece for token, piece in zip(ids, pieces, strict=True)]
    return PromptTokens(ids, word_ids, words, labels)
