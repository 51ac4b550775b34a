import torch

from nodes.p2p.alignment import global_alignment, refine_mapping, word_swap_mapping, word_token_positions


def test_word_swap_equal_splits_is_a_permutation_of_identity():
    # [CLS] a red circle [SEP]  ->  [CLS] a red square [SEP]
    ids = [None, 0, 1, 2, None]
    mapping = word_swap_mapping(ids, ids)
    assert torch.equal(mapping, torch.eye(5))


def test_word_swap_one_to_many_when_a_word_splits():
    # source: [CLS] a cat [SEP]; target: [CLS] a kit ##ten [SEP]
    source = [None, 0, 1, None]
    target = [None, 0, 1, 1, None]
    mapping = word_swap_mapping(source, target)
    assert mapping.shape == (4, 5)
    assert mapping[2, 2] == 1 and mapping[2, 3] == 1  # both pieces of "kitten" read "cat"
    assert mapping[3, 4] == 1 and mapping[0, 0] == 1  # [SEP] to [SEP], [CLS] to [CLS]
    # the reverse direction averages the two pieces
    back = word_swap_mapping(target, source)
    assert torch.allclose(back[:, 2], torch.tensor([0, 0, 0.5, 0.5, 0]))
    attention = torch.softmax(torch.randn(7, 4), dim=-1)
    mapped = attention @ mapping
    assert torch.allclose(mapped[:, 3], attention[:, 2])


def test_word_swap_keeps_pieces_of_words_split_alike():
    # [BOS] cat on gr·ass [EOS] -> [BOS] dog on gr·ass [EOS]: each piece of "grass" keeps its own column
    ids = [None, 0, 1, 2, 2, None]
    assert torch.equal(word_swap_mapping(ids, ids), torch.eye(6))
    mapping = word_swap_mapping([None, 0, 1, 1, None], [None, 0, 0, 0, 1, 1, None])
    assert mapping[2, 4] == 1 and mapping[3, 5] == 1 and mapping[2, 5] == 0  # piece to piece
    assert mapping[1, 1] == mapping[1, 2] == mapping[1, 3] == 1  # one piece to three


def test_word_swap_refuses_different_word_counts():
    try:
        word_swap_mapping([None, 0, None], [None, 0, 1, None])
    except ValueError as err:
        assert "same number of words" in str(err)
    else:
        raise AssertionError("expected ValueError")


def test_global_alignment_with_insertion():
    source = [101, 1, 2, 3, 102]          # [CLS] a red circle [SEP]
    target = [101, 1, 7, 2, 3, 102]       # [CLS] a big red circle [SEP]
    pairs = global_alignment(source, target)
    assert (None, 2) in pairs
    assert [(i, j) for i, j in pairs if i is not None and j is not None] == [(0, 0), (1, 1), (2, 3), (3, 4), (4, 5)]
    mapping, alpha = refine_mapping(source, target)
    assert alpha.tolist() == [1, 1, 0, 1, 1, 1]
    assert mapping[2, 3] == 1 and mapping[:, 2].sum() == 0


def test_refine_with_padding_keeps_tail_identity():
    mapping, alpha = refine_mapping([5, 6], [5, 9, 6], source_length=6, target_length=6)
    assert mapping[0, 0] == 1 and mapping[1, 2] == 1 and alpha[1] == 0
    assert all(mapping[p, p] == 1 for p in range(3, 6))


def test_word_positions():
    word_ids = [None, 0, 1, 1, 2, None]
    assert word_token_positions(word_ids, ["Kitten"], ["a", "kitten", "sleeps"]) == [2, 3]
