"""LoRA adapters on the pretrained LSTM: only the adapter is state, round 0 is the pretrained model,
and DP-SGD trains it."""

from __future__ import annotations

import numpy as np
import torch

from fedattn.adapters import BASE_HIDDEN, LoRALSTM, lora_lstm
from fedattn.data import load_dataset
from fedattn.models import float_state, make_model
from fedattn.training import Recipe, train_epochs


def test_only_the_adapter_is_state_and_it_starts_as_the_pretrained_model():
    torch.set_num_threads(1)
    ds = load_dataset("pydoc-topics")
    model = make_model("fedattn.adapters:lora_lstm", input_shape=ds.input_shape, n_classes=ds.n_classes, seed=3)
    state = float_state(model)
    assert sorted(state) == ["head.a.weight", "head.b.weight"] and not state["head.b.weight"].any()
    assert sum(a.size for a in state.values()) == 4 * BASE_HIDDEN + ds.n_classes * 4
    base = make_model("fedattn.adapters:pretrained_lstm", input_shape=ds.input_shape, n_classes=ds.n_classes, seed=5)
    assert sum(a.size for a in float_state(base).values()) > 40 * sum(a.size for a in state.values())  # full tuning
    x = torch.as_tensor(ds.x_test[:256])
    with torch.no_grad():
        torch.testing.assert_close(model(x), base(x))
    frozen = [p.clone() for p in model._frozen[1].parameters()]
    train_epochs(model, ds.x_train[:512], ds.y_train[:512], recipe=Recipe(), seed=0)
    assert float_state(model)["head.b.weight"].any()  # the adapter learned
    assert all(torch.equal(a, b) for a, b in zip(frozen, model._frozen[1].parameters()))  # the base did not


def test_dp_sgd_trains_the_adapter():
    from opacus import PrivacyEngine

    ds = load_dataset("pydoc-topics")
    model = lora_lstm(ds.input_shape, ds.n_classes)
    assert isinstance(model, LoRALSTM)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.as_tensor(ds.x_train[:64]),
                                                                        torch.as_tensor(ds.y_train[:64])), batch_size=16)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    private, optimizer, loader = PrivacyEngine().make_private(module=model, optimizer=optimizer, data_loader=loader,
                                                              noise_multiplier=1.0, max_grad_norm=1.0)
    before = model.head.b.weight.detach().clone()
    xb, yb = next(iter(loader))
    torch.nn.functional.cross_entropy(private(xb), yb).backward()
    optimizer.step()
    assert not np.allclose(before.numpy(), model.head.b.weight.detach().numpy())
