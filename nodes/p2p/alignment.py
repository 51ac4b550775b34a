"""Token correspondences between a source and a target prompt.

Attention maps have one column per token. To carry the source's cross-attention into the target
run we need, for each target token, which source token(s) it stands for:

* word swap (same number of words): token j of target word w takes token j of source word w when
  both split into as many pieces (unchanged words keep their maps piece by piece, e.g. CLIP's
  g·r·a·s·s), else the mean over the tokens of source word w (one-to-many);
* refine (words added or changed): a global alignment (Needleman–Wunsch) of the token id
  sequences; aligned target tokens take their source column, new tokens keep their own.

Both are returned as a (L_src, L_tgt) matrix M, so that A_tgt = A_src @ M, plus a (L_tgt,) weight
alpha saying how much of the mapped source column a target token takes (1 aligned, 0 new).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def word_spans(word_ids: Sequence[int | None]) -> tuple[list[int], dict[int, list[int]]]:
    """Positions of special tokens (word id None) and of each word's tokens."""
    specials: list[int] = []
    words: dict[int, list[int]] = {}
    for position, word in enumerate(word_ids):
        if word is None:
            specials.append(position)
        else:
            words.setdefault(word, []).append(position)
    return specials, words


def word_swap_mapping(source_word_ids: Sequence[int | None], target_word_ids: Sequence[int | None],
                      source_length: int | None = None, target_length: int | None = None) -> torch.Tensor:
    """M (L_src, L_tgt) for prompts with the same number of words (see the module doc for each word).

    Special tokens map to the special token in the same order ([CLS] to [CLS], [SEP] to [SEP]);
    positions beyond both prompts (padding) map to themselves where they exist on both sides.
    """
    src_specials, src_words = word_spans(source_word_ids)
    tgt_specials, tgt_words = word_spans(target_word_ids)
    if len(src_words) != len(tgt_words):
        raise ValueError(f"word swap needs prompts with the same number of words: {len(src_words)} vs "
                         f"{len(tgt_words)}; use refine for added words")
    rows = source_length or len(source_word_ids)
    cols = target_length or len(target_word_ids)
    mapping = torch.zeros(rows, cols)
    for src, tgt in zip(src_specials, tgt_specials, strict=False):
        mapping[src, tgt] = 1.0
    for (_, src_positions), (_, tgt_positions) in zip(sorted(src_words.items()), sorted(tgt_words.items()),
                                                      strict=True):
        if len(src_positions) == len(tgt_positions):
            mapping[src_positions, tgt_positions] = 1.0
            continue
        for tgt in tgt_positions:
            mapping[src_positions, tgt] = 1.0 / len(src_positions)
    for position in range(max(len(source_word_ids), len(target_word_ids)), min(rows, cols)):
        mapping[position, position] = 1.0
    return mapping


def global_alignment(source: Sequence[int], target: Sequence[int], match: float = 1.0, mismatch: float = -1.0,
                     gap: float = -1.0) -> list[tuple[int | None, int | None]]:
    """Needleman–Wunsch alignment of two token id sequences: pairs (i, j), None for a gap."""
    n, m = len(source), len(target)
    score = [[0.0] * (m + 1) for _ in range(n + 1)]
    for i in range(1, n + 1):
        score[i][0] = i * gap
    for j in range(1, m + 1):
        score[0][j] = j * gap
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            diagonal = score[i - 1][j - 1] + (match if source[i - 1] == target[j - 1] else mismatch)
            score[i][j] = max(diagonal, score[i - 1][j] + gap, score[i][j - 1] + gap)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:
        if i > 0 and j > 0 and score[i][j] == score[i - 1][j - 1] + (
                match if source[i - 1] == target[j - 1] else mismatch):
            pairs.append((i - 1, j - 1))
            i, j = i - 1, j - 1
        elif i > 0 and score[i][j] == score[i - 1][j] + gap:
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    return pairs[::-1]


def refine_mapping(source_ids: Sequence[int], target_ids: Sequence[int], source_length: int | None = None,
                   target_length: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, alpha) from the global alignment: only identical aligned tokens carry the source map."""
    rows = source_length or len(source_ids)
    cols = target_length or len(target_ids)
    mapping = torch.zeros(rows, cols)
    alpha = torch.zeros(cols)
    for i, j in global_alignment(source_ids, target_ids):
        if i is not None and j is not None and source_ids[i] == target_ids[j]:
            mapping[i, j] = 1.0
            alpha[j] = 1.0
    for position in range(max(len(source_ids), len(target_ids)), min(rows, cols)):
        mapping[position, position] = 1.0
        alpha[position] = 1.0
    return mapping, alpha


def word_token_positions(word_ids: Sequence[int | None], words: Sequence[str], prompt_words: Sequence[str]
                         ) -> list[int]:
    """Token positions of the given words (case-insensitive) in a prompt split into `prompt_words`."""
    wanted = {w.lower() for w in words}
    _, spans = word_spans(word_ids)
    positions: list[int] = []
    for index, word in enumerate(prompt_words):
        if word.lower().strip(".,!?;:") in wanted:
            positions.extend(spans.get(index, []))
    return positions
