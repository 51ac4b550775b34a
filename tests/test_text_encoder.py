"""The frozen MiniLM text encoder: real embeddings, offline, batches of prompts, the empty prompt."""

import socket

import pytest
import torch

from nodegraph import Context, Session
from nodegraph.cache import size_of
from nodes.text.encoder import load_text_encoder, split_prompts, text_encode

from .helpers import EventLog, link, wf


@pytest.fixture(scope="module")
def encoder():
    return load_text_encoder("all-MiniLM-L6-v2", "cpu")


@pytest.fixture()
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("the text encoder tried to use the network")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_loads_and_encodes_offline(no_network):
    enc = load_text_encoder("all-MiniLM-L6-v2", "cpu")
    cond = enc.encode(["a red circle"])
    assert enc.dim == 384 and cond.tokens.shape[-1] == 384
    assert not any(p.requires_grad for p in enc.model.parameters()) and not enc.model.training


def test_similar_prompts_are_closer_than_dissimilar(encoder):
    cond = encoder.encode(["a small red circle at the top left", "a little red circle in the upper left corner",
                           "a large blue square at the bottom right"])
    sim = cond.pooled @ cond.pooled.T
    assert sim[0, 1] > sim[0, 2] + 0.1
    assert torch.allclose(cond.pooled.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_batch_of_prompts_from_lines_matches_single_encodings(encoder):
    lines = "a red circle\n\n  a large blue square on a black background  \n"
    assert split_prompts(lines) == ["a red circle", "a large blue square on a black background"]
    batch = text_encode.node_type.fn(Context("t", "core/text_encode"), encoder, lines)
    assert batch.tokens.shape[0] == 2 and batch.prompts == tuple(split_prompts(lines))
    assert batch.mask[0].sum() < batch.mask[1].sum()  # the shorter prompt is padded and masked
    single = encoder.encode(["a red circle"])
    n = int(single.mask.sum())
    assert torch.allclose(batch.tokens[0, :n], single.tokens[0], atol=1e-4)
    assert torch.allclose(batch.pooled[0], single.pooled[0], atol=1e-5)


def test_empty_prompt_is_a_real_null_condition(encoder):
    null = text_encode.node_type.fn(Context("t", "core/text_encode"), encoder, "")
    assert null.prompts == ("",) and null.tokens.shape[0] == 1
    assert int(null.mask.sum()) == 2  # just the [CLS] and [SEP] tokens
    other = encoder.encode(["a red circle"])
    assert not torch.allclose(null.pooled, other.pooled, atol=1e-2)


def test_fixed_length_padding_does_not_change_real_tokens(encoder):
    free = encoder.encode(["a green triangle"])
    padded = encoder.encode(["a green triangle"], length=20)
    n = int(free.mask.sum())
    assert padded.tokens.shape[1] == 20 and int(padded.mask.sum()) == n
    assert torch.allclose(padded.tokens[0, :n], free.tokens[0], atol=1e-4)


def test_unknown_encoder_name_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_text_encoder(str(tmp_path / "nowhere"))


def test_caption_table_encodes_each_distinct_caption_once(encoder):
    """The training table: example i's row holds its caption's features; the null row is the empty prompt."""
    from nodes.training.text_to_image import caption_table

    captions = ["a red circle", "a large blue square on a black background", "a red circle"]
    table = caption_table(encoder, captions)
    assert table.tokens.shape[0] == 3  # two distinct captions + ""
    assert table.index[0] == table.index[2] != table.index[1]
    dropped = torch.tensor([False, False, True])
    cond = table.condition_fn()(torch.arange(3), dropped)
    for i, text in enumerate(["a red circle", "a large blue square on a black background", ""]):
        ref = encoder.encode([text])
        n = int(ref.mask.sum())
        assert int(cond.mask[i].sum()) == n
        assert torch.allclose(cond.tokens[i, :n], ref.tokens[0], atol=1e-4)
        assert torch.allclose(cond.pooled[i], ref.pooled[0], atol=1e-5)


def weight_bytes(module) -> int:
    return sum(t.numel() * t.element_size() for t in (*module.parameters(), *module.buffers()))


def encode_workflow(text: str):
    return wf({"enc": {"type": "core/text_encoder_loader", "inputs": {}},
               "prompt": {"type": "core/text_encode",
                          "inputs": {"encoder": link("enc", "text_encoder"), "text": text}}})


def test_loader_keeps_no_hidden_cache():
    """Only the engine caches a loaded encoder (under its budget): each direct load is a new object."""
    assert load_text_encoder() is not load_text_encoder()


def test_engine_caches_the_encoder_and_counts_its_weights(builtin_registry):
    session = Session(builtin_registry, device="cpu")
    first = session.run(encode_workflow("a red circle"), outputs=["enc", "prompt"])
    assert first.ran == ["enc", "prompt"]
    encoder = first.value("enc")
    log = EventLog()
    second = session.run(encode_workflow("a blue square"), outputs=["enc", "prompt"], on_event=log)
    assert log.nodes("node_cached") == ["enc"] and log.nodes("node_start") == ["prompt"]  # not reloaded
    assert second.value("enc") is encoder and second.value("prompt").prompts == ("a blue square",)
    assert size_of(encoder) >= weight_bytes(encoder.model)
    assert session.cache.total_bytes >= weight_bytes(encoder.model)


def test_encoder_larger_than_the_budget_is_not_kept(builtin_registry):
    """Its weights count against the budget: a cache smaller than them does not hold the encoder."""
    session = Session(builtin_registry, device="cpu", cache_bytes=8 << 20)
    session.run(encode_workflow("a red circle"), outputs=["prompt"])
    assert session.cache.total_bytes <= 8 << 20
    log = EventLog()
    session.run(encode_workflow("a blue square"), outputs=["prompt"], on_event=log)
    assert log.nodes("node_start") == ["enc", "prompt"]
