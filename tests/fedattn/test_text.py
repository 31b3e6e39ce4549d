"""The text corpus, its natural partition and the LSTM language model."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import torch

from fedattn import text
from fedattn.data import load_dataset, partition
from fedattn.errors import PartitionError
from fedattn.models import make_model


def test_the_corpus_is_the_pinned_snapshot_and_a_changed_one_is_refused(tmp_path, monkeypatch):
    topics = text.load_topics()
    assert len(topics) == 79 and sum(map(len, topics.values())) == 464970
    changed = tmp_path / "pydoc_topics.json.gz"
    changed.write_bytes(gzip.compress(gzip.decompress(text.CORPUS.read_bytes()).replace(b"assert", b"insist", 1)))
    monkeypatch.setattr(text, "CORPUS", changed)
    text.load_topics.cache_clear()
    try:
        with pytest.raises(text.CorpusError, match="not the pinned snapshot"):
            text.load_topics()
    finally:
        text.load_topics.cache_clear()


def test_the_vocabulary_comes_from_the_public_topics_only():
    topics = text.load_topics()
    public, private = text.public_private(topics)
    assert not set(public) & set(private) and len(public) + len(private) == 79
    vocab = text.build_vocabulary([topics[n] for n in public])
    only_private = {t for n in private for t in text.tokenize(topics[n])} - {
        t for n in public for t in text.tokenize(topics[n])}
    assert only_private and not only_private & set(vocab)  # a client's own words stay <unk>


def test_windows_label_the_next_token_and_each_topic_is_cut_80_20():
    ds = load_dataset("pydoc-topics")
    assert ds.x_train.dtype == np.float32 and ds.y_train.max() < ds.n_classes
    assert np.array_equal(ds.x_train[1, :-1], ds.x_train[0, 1:]) and ds.x_train[1, -1] == ds.y_train[0]
    assert 0.19 < len(ds.y_test) / (len(ds.y_test) + len(ds.y_train)) < 0.21


def test_the_natural_partition_deals_whole_topics():
    ds = load_dataset("pydoc-topics")
    shards = partition(ds.y_train, 10, scheme="natural", groups=ds.groups, seed=0)
    owners = [set(ds.groups[s]) for s in shards]
    assert all(a.isdisjoint(b) for i, a in enumerate(owners) for b in owners[i + 1:])
    assert sorted(np.concatenate(shards).tolist()) == list(range(len(ds.y_train)))
    other = partition(ds.y_train, 10, scheme="natural", groups=ds.groups, seed=1)
    assert any(not np.array_equal(a, b) for a, b in zip(shards, other))  # the seed orders ties
    with pytest.raises(PartitionError, match="needs the dataset's groups"):
        partition(ds.y_train, 10, scheme="natural")
    with pytest.raises(PartitionError, match="63 natural groups"):
        partition(ds.y_train, 64, scheme="natural", groups=ds.groups)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_a_language_model_predicts_the_next_token_and_trains_under_opacus(name):
    from opacus import PrivacyEngine

    ds = load_dataset("pydoc-topics")
    torch.manual_seed(0)
    model = make_model(name, input_shape=ds.input_shape, n_classes=ds.n_classes, seed=0)
    x, y = torch.as_tensor(ds.x_train[:64]), torch.as_tensor(ds.y_train[:64])
    assert model(x).shape == (64, ds.n_classes)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    private, optimizer, loader = PrivacyEngine().make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                              noise_multiplier=1.0, max_grad_norm=1.0)
    xb, yb = next(iter(loader))
    before = [p.detach().clone() for p in model.parameters()]
    torch.nn.functional.cross_entropy(private(xb), yb).backward()
    optimizer.step()  # per-sample gradients exist for every layer, or Opacus raises here
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # every layer was trained
    e = model.embedding(x[:4].long())
    torch.testing.assert_close(model.forward_embedded(e), model(x[:4]))  # the attack's entry point, same logits


def test_encrypted_fedatt_reaches_the_plaintext_perplexity(strict_keys):
    import math

    from fedattn.simulation import SimulationConfig, run_simulation

    cfg = dict(dataset="pydoc-topics", model="lstm", partition="natural", clients=5, rounds=1, seed=0)
    plain = run_simulation(SimulationConfig(**cfg, protection="plain")).rounds[-1]
    enc = run_simulation(SimulationConfig(**cfg, protection="ckks"), keys=strict_keys).rounds[-1]
    assert math.exp(enc.loss) == pytest.approx(math.exp(plain.loss), rel=1e-3)  # the release's noise only
    assert math.exp(plain.loss) < 0.5 * load_dataset("pydoc-topics").n_classes  # it learned something


def test_the_lstm_state_names_each_tensor_once_and_loading_updates_every_name():
    from fedattn.models import float_state, load_float_state

    model = make_model("lstm", input_shape=(8,), n_classes=50, seed=0)
    state = float_state(model)
    assert sum(a.size for a in state.values()) == sum(p.numel() for p in model.parameters())  # no tensor twice
    load_float_state(model, {k: v + 1.0 for k, v in state.items()})
    assert torch.equal(model.lstm.weight_ih_l0, model.lstm.l0.ih.weight)  # Opacus' two names, one tensor
    np.testing.assert_allclose(model.lstm.l0.ih.weight.detach().numpy(), state["lstm.weight_ih_l0"] + 1.0)
