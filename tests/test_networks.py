"""Tests for the activation registry and the plain networks in ``models.components``.

Parameter counts are computed by hand in the comments (weights + biases per layer) so a
change in the architecture shows up as a failing number, not a silently updated one.
The from-scratch network's hand-written gradients are checked against autograd for
every registered activation.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from models.activations import (
    ACTIVATIONS,
    activation_functions,
    build_activation,
    check_activation,
)
from models.components import (
    MLP,
    ConvNet,
    FourBlockCNN,
    LeNet,
    ScratchTwoLayerNet,
    conv_output_size,
)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# Independent references: torch.nn.functional, not the registry's own modules.
REFERENCE = {
    "relu": F.relu,
    "leaky_relu": lambda z: F.leaky_relu(z, negative_slope=0.01),
    "elu": F.elu,
    "selu": F.selu,
    "swish": lambda z: z * torch.sigmoid(z),
    "sigmoid": torch.sigmoid,
    "tanh": torch.tanh,
}


# --------------------------------------------------------------------------- registry


def test_registry_lists_every_task_activation():
    assert set(ACTIVATIONS) == {"relu", "leaky_relu", "elu", "selu", "swish", "sigmoid", "tanh"}
    assert set(REFERENCE) == set(ACTIVATIONS)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_every_name_builds_and_matches_reference(name):
    assert check_activation(name) == name
    module = build_activation(name)
    assert isinstance(module, nn.Module)
    z = torch.linspace(-4, 4, 41, dtype=torch.float64)
    torch.testing.assert_close(module(z), REFERENCE[name](z))


@pytest.mark.parametrize("bad", ["ReLU", "gelu", "", "leaky-relu"])
def test_unknown_activation_raises_with_all_names(bad):
    for call in (check_activation, build_activation, activation_functions):
        with pytest.raises(ValueError) as err:
            call(bad)
        message = str(err.value)
        assert repr(bad) in message
        for name in ACTIVATIONS:
            assert name in message


@pytest.mark.parametrize(
    "factory",
    [
        lambda: MLP(4, 2, activation="gelu"),
        lambda: FourBlockCNN(activation="gelu"),
        lambda: LeNet(activation="gelu"),
        lambda: ConvNet(activation="gelu"),
        lambda: ScratchTwoLayerNet(4, 3, 2, activation="gelu"),
    ],
)
def test_bad_activation_fails_at_construction(factory):
    with pytest.raises(ValueError, match="valid activations"):
        factory()


def test_leaky_relu_uses_negative_slope():
    z = torch.tensor([-2.0, 3.0])
    torch.testing.assert_close(build_activation("leaky_relu", 0.2)(z), torch.tensor([-0.4, 3.0]))
    f, df = activation_functions("leaky_relu", negative_slope=0.2)
    torch.testing.assert_close(f(z), torch.tensor([-0.4, 3.0]))
    torch.testing.assert_close(df(z), torch.tensor([0.2, 1.0]))


def test_derivative_conventions_at_zero():
    zero = torch.zeros(1)
    assert activation_functions("relu")[1](zero).item() == 0.0
    assert activation_functions("leaky_relu", 0.05)[1](zero).item() == pytest.approx(0.05)


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_derivative_matches_autograd(name):
    # 40 points symmetric about 0 with an even count: no point is exactly 0,
    # where relu-like derivatives are a convention rather than a derivative.
    z = torch.linspace(-6, 6, 40, dtype=torch.float64)
    assert not (z == 0).any()
    f, df = activation_functions(name)
    z_ag = z.clone().requires_grad_(True)
    out = REFERENCE[name](z_ag)
    (grad,) = torch.autograd.grad(out.sum(), z_ag)
    torch.testing.assert_close(f(z), out.detach())
    torch.testing.assert_close(df(z), grad)
    assert not f(z).requires_grad and not df(z).requires_grad


def test_selu_constants_are_standard():
    f, df = activation_functions("selu")
    lam, alpha = 1.0507009873554805, 1.6732632423543772
    z = torch.tensor([1.0, -1.0], dtype=torch.float64)
    expected = torch.tensor([lam, lam * alpha * (torch.e**-1 - 1)], dtype=torch.float64)
    torch.testing.assert_close(f(z), expected)
    torch.testing.assert_close(
        df(z), torch.tensor([lam, lam * alpha * torch.e**-1], dtype=torch.float64)
    )


# ------------------------------------------------------------------- shapes and sizes


@pytest.mark.parametrize(
    ("net", "shape", "classes"),
    [
        (MLP(3 * 32 * 32, 5, hidden_sizes=(512, 256)), (4, 3, 32, 32), 5),
        (MLP(784, 10, hidden_sizes=(), dropout=0.0), (4, 1, 28, 28), 10),
        (MLP(784, 10, hidden_sizes=(64, 32), activation="selu", dropout=0.2), (4, 784), 10),
        (FourBlockCNN(), (4, 1, 28, 28), 10),
        (FourBlockCNN(in_channels=3, input_size=32, num_classes=5), (4, 3, 32, 32), 5),
        (LeNet(), (4, 3, 32, 32), 5),
        (LeNet(in_channels=1, input_size=28, num_classes=10), (4, 1, 28, 28), 10),
        (ConvNet(), (4, 1, 28, 28), 10),
        (ConvNet(kernel_size=3, stride=1, padding=1, batch_norm=True), (4, 1, 28, 28), 10),
        (ScratchTwoLayerNet(784, 64, 10), (4, 1, 28, 28), 10),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else None,
)
def test_output_shapes(net, shape, classes):
    net.eval()
    out = net(torch.randn(*shape))
    assert out.shape == (shape[0], classes)
    assert torch.isfinite(out).all()


def test_conv_param_count_theory_example():
    # S1 theory: a 3x3 conv on RGB with one filter = 3*3*3 weights + 1 bias.
    assert n_params(nn.Conv2d(3, 1, kernel_size=3)) == 27 + 1
    assert n_params(nn.Conv2d(3, 1, kernel_size=3, bias=False)) == 27


def test_lenet_param_count():
    conv1 = 3 * 6 * 5 * 5 + 6  # 456
    conv2 = 6 * 16 * 5 * 5 + 16  # 2416
    fc1 = 400 * 120 + 120  # 48120
    fc2 = 120 * 84 + 84  # 10164
    fc3 = 84 * 5 + 5  # 425
    assert conv1 + conv2 + fc1 + fc2 + fc3 == 61581
    net = LeNet()  # 3x32x32 inputs, 5 classes (S0.3)
    assert net.flat_features == 400
    assert n_params(net) == 61581
    # The often quoted 62,006 is the same LeNet with 10 outputs (CIFAR-10 tutorial).
    assert n_params(LeNet(num_classes=10)) == 61581 - 425 + (84 * 10 + 10) == 62006


def test_four_block_cnn_param_count():
    convs = [1 * 32 * 9 + 32, 32 * 64 * 9 + 64, 64 * 128 * 9 + 128, 128 * 256 * 9 + 256]
    bns = [2 * c for c in (32, 64, 128, 256)]  # weight + bias per channel
    fcs = [256 * 128 + 128, 128 * 10 + 10]
    expected = sum(convs) + sum(bns) + sum(fcs)
    assert expected == 422986
    net = FourBlockCNN()
    assert net.flat_features == 256  # 28 -> 14 -> 7 -> 3 -> 1
    assert n_params(net) == expected


def test_mlp_param_count_and_first_layer():
    # S0.2 default 3072-512-256-5.
    expected = (3072 * 512 + 512) + (512 * 256 + 256) + (256 * 5 + 5)
    assert expected == 1705989
    net = MLP(3072, 5, hidden_sizes=(512, 256))
    assert n_params(net) == expected
    assert isinstance(net.first_layer, nn.Linear)
    assert net.first_layer.weight.shape == (512, 3072)
    linear = MLP(784, 10, hidden_sizes=())
    assert n_params(linear) == 784 * 10 + 10
    assert linear.first_layer.weight.shape == (10, 784)


def test_mlp_state_dict_keys_do_not_depend_on_dropout():
    a = MLP(20, 3, hidden_sizes=(8, 4), dropout=0.0)
    b = MLP(20, 3, hidden_sizes=(8, 4), dropout=0.5)
    b.load_state_dict(a.state_dict())


@pytest.mark.parametrize(
    ("size", "k", "s", "p", "out"),
    [
        (28, 2, 2, 0, 14),
        (14, 2, 2, 0, 7),
        (7, 2, 2, 0, 3),  # floor((7 - 2) / 2) + 1
        (32, 5, 1, 0, 28),
        (32, 3, 1, 1, 32),
        (227, 11, 4, 0, 55),
        (5, 3, 2, 1, 3),
    ],
)
def test_conv_output_size_formula(size, k, s, p, out):
    assert conv_output_size(size, k, s, p) == out
    assert ConvNet.conv_output_size(size, k, s, p) == out
    # Agrees with what torch actually produces.
    y = nn.Conv2d(1, 1, k, s, p)(torch.zeros(1, 1, size, size))
    assert y.shape[-1] == out


def test_convnet_flat_size_and_params():
    net = ConvNet()  # S2: (k, s, p) = (2, 2, 0), 28 -> 14 -> 7 -> 3
    assert net.flat_features == 128 * 3 * 3
    convs = (1 * 32 * 4 + 32) + (32 * 64 * 4 + 64) + (64 * 128 * 4 + 128)
    fcs = (1152 * 128 + 128) + (128 * 10 + 10)
    assert n_params(net) == convs + fcs == 190186
    bn = ConvNet(batch_norm=True)
    assert n_params(bn) == 190186 + 2 * (32 + 64 + 128)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    same = ConvNet(kernel_size=3, stride=1, padding=1, channels=(8, 8))
    assert same.flat_features == 8 * 28 * 28


def test_convnet_rejects_vanishing_feature_map():
    # 4 -> 2 -> 1 -> 0 with (2, 2, 0): the third block has nothing left.
    with pytest.raises(ValueError, match="input_size=4"):
        ConvNet(input_size=4)
    with pytest.raises(ValueError, match="kernel_size"):
        ConvNet(input_size=28, kernel_size=40)
    with pytest.raises(ValueError, match="stride"):
        ConvNet(stride=0)
    with pytest.raises(ValueError, match="input_size"):
        FourBlockCNN(input_size=8)
    with pytest.raises(ValueError, match="input_size"):
        LeNet(input_size=12)


# ------------------------------------------------------------- from-scratch network


def autograd_loss(net, x, y, l2_lambda, loss_scale):
    """The same loss built from torch.nn.functional and autograd, on float64 leaf copies."""
    params = {
        k: getattr(net, k).detach().clone().double().requires_grad_(True)
        for k in ("W1", "b1", "W2", "b2")
    }
    act = build_activation(net.activation, net.negative_slope)
    xf = x.flatten(1).double()
    logits = act(xf @ params["W1"] + params["b1"]) @ params["W2"] + params["b2"]
    n = xf.shape[0]
    l2 = params["W1"].pow(2).sum() + params["W2"].pow(2).sum()
    loss = loss_scale * F.cross_entropy(logits, y) + l2_lambda / (2 * n) * l2
    grads = torch.autograd.grad(loss, list(params.values()))
    return loss.detach(), dict(zip(params, grads, strict=True))


@pytest.mark.parametrize("name", ACTIVATIONS)
@pytest.mark.parametrize("l2_lambda", [0.0, 0.7])
@pytest.mark.parametrize("loss_scale", [1.0, 0.1])
def test_scratch_grads_match_autograd(name, l2_lambda, loss_scale):
    # init_std 0.5 spreads pre-activations over both sides of 0, so every branch of
    # the piecewise activations contributes to the gradient.
    net = ScratchTwoLayerNet(12, 9, 4, activation=name, init_std=0.5, seed=3).double()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(16, 3, 4, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 4, (16,), generator=gen)
    loss, grads = net.loss_and_grads(x, y, l2_lambda=l2_lambda, loss_scale=loss_scale)
    ref_loss, ref_grads = autograd_loss(net, x, y, l2_lambda, loss_scale)
    torch.testing.assert_close(loss, ref_loss)
    assert set(grads) == {"W1", "b1", "W2", "b2"}
    for key, ref in ref_grads.items():
        assert grads[key].shape == getattr(net, key).shape
        torch.testing.assert_close(grads[key], ref, msg=lambda m, key=key: f"{key}: {m}")
    assert not loss.requires_grad
    assert not any(g.requires_grad for g in grads.values())


def test_scratch_needs_no_autograd():
    net = ScratchTwoLayerNet(6, 5, 3, init_std=0.3)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    assert all(not p.requires_grad for p in net.parameters())
    with torch.inference_mode():
        loss, grads = net.loss_and_grads(x, y, l2_lambda=0.1)
    assert torch.isfinite(loss)
    assert all(g.grad_fn is None for g in grads.values())


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_scratch_forward_equals_sequential(name):
    net = ScratchTwoLayerNet(12, 7, 5, activation=name, init_std=0.5, seed=2)
    seq = nn.Sequential(nn.Flatten(), nn.Linear(12, 7), build_activation(name), nn.Linear(7, 5))
    with torch.no_grad():
        net.b1.normal_()
        net.b2.normal_()
        seq[1].weight.copy_(net.W1.T)
        seq[1].bias.copy_(net.b1.squeeze(0))
        seq[3].weight.copy_(net.W2.T)
        seq[3].bias.copy_(net.b2.squeeze(0))
        x = torch.randn(10, 3, 4)
        torch.testing.assert_close(net(x), seq(x))
        probs = net.predict_proba(x)
        torch.testing.assert_close(probs, torch.softmax(seq(x), dim=1))
        torch.testing.assert_close(probs.sum(1), torch.ones(10))
        assert torch.equal(net.predict(x), seq(x).argmax(1))


def test_scratch_init_shapes_seed_and_state_dict():
    net = ScratchTwoLayerNet(784, 100, 10, seed=7)
    assert net.W1.shape == (784, 100) and net.W2.shape == (100, 10)
    assert net.b1.shape == (1, 100) and net.b2.shape == (1, 10)
    assert torch.count_nonzero(net.b1) == 0 and torch.count_nonzero(net.b2) == 0
    assert net.W1.std().item() == pytest.approx(0.01, rel=0.05)
    assert n_params(net) == 784 * 100 + 100 + 100 * 10 + 10
    assert set(net.state_dict()) == {"W1", "b1", "W2", "b2"}
    assert net.first_layer_weight.shape == (100, 784)
    torch.testing.assert_close(net.first_layer_weight, net.W1.T)

    # Same seed, same weights, regardless of the global RNG state.
    torch.manual_seed(123)
    again = ScratchTwoLayerNet(784, 100, 10, seed=7)
    assert torch.equal(net.W1, again.W1) and torch.equal(net.W2, again.W2)
    assert not torch.equal(net.W1, ScratchTwoLayerNet(784, 100, 10, seed=8).W1)

    he = ScratchTwoLayerNet(784, 100, 10, init="he")
    assert he.W1.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.05)
    assert he.W2.std().item() == pytest.approx((2 / 100) ** 0.5, rel=0.2)

    # Checkpoint round trip through state_dict, deepcopy and pickle.
    fresh = ScratchTwoLayerNet(784, 100, 10, seed=99)
    fresh.load_state_dict(net.state_dict())
    assert torch.equal(fresh.W1, net.W1)
    clone = pickle.loads(pickle.dumps(copy.deepcopy(ScratchTwoLayerNet(4, 3, 2, "leaky_relu"))))
    assert clone(torch.randn(2, 4)).shape == (2, 2)


def test_scratch_rejects_bad_labels_and_init():
    net = ScratchTwoLayerNet(4, 3, 2)
    with pytest.raises(ValueError, match="class indices"):
        net.loss_and_grads(torch.randn(5, 4), torch.zeros(5, 2))
    with pytest.raises(ValueError, match="labels"):
        net.loss_and_grads(torch.randn(5, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="init="):
        ScratchTwoLayerNet(4, 3, 2, init="xavier")


def test_sgd_step_updates_in_place():
    net = ScratchTwoLayerNet(4, 3, 2)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ptr = net.W1.data_ptr()
    grads = {k: torch.ones_like(v) for k, v in before.items()}
    net.sgd_step(grads, lr=0.5)
    assert net.W1.data_ptr() == ptr
    for key, value in before.items():
        torch.testing.assert_close(getattr(net, key), value - 0.5)


def _blobs(n_per_class: int = 60, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    centers = torch.tensor([[3.0, 0.0], [-3.0, 3.0], [-3.0, -3.0]])
    x = torch.cat([c + 0.5 * torch.randn(n_per_class, 2, generator=gen) for c in centers])
    y = torch.arange(3).repeat_interleave(n_per_class)
    return x, y


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_scratch_sgd_learns_separable_problem(name):
    x, y = _blobs()
    net = ScratchTwoLayerNet(2, 16, 3, activation=name, init="he", seed=0)
    first, _ = net.loss_and_grads(x, y, l2_lambda=1e-3)
    for _ in range(300):
        loss, grads = net.loss_and_grads(x, y, l2_lambda=1e-3)
        net.sgd_step(grads, lr=0.2)
    assert loss.item() < 0.2 * first.item()
    assert loss.item() < 0.15
    accuracy = (net.predict(x) == y).float().mean().item()
    assert accuracy > 0.97


def test_scratch_s11_setup_learns_with_scaled_loss():
    # S1.1: randn * 0.01 init, ReLU, cross-entropy divided by the number of classes.
    x, y = _blobs(seed=1)
    net = ScratchTwoLayerNet(2, 16, 3, init_std=0.01, seed=0)
    first, _ = net.loss_and_grads(x, y, loss_scale=1 / 3)
    assert first.item() == pytest.approx(torch.log(torch.tensor(3.0)).item() / 3, rel=1e-3)
    for _ in range(400):
        loss, grads = net.loss_and_grads(x, y, loss_scale=1 / 3)
        net.sgd_step(grads, lr=3.0)
    assert loss.item() < 0.2 * first.item()
    assert (net.predict(x) == y).float().mean().item() > 0.97


def test_training_summary_is_the_sample_weighted_mean_over_batches():
    # The module holds training batches and updates its metrics once per summary; the
    # result must equal per-sample averaging over batches of unequal size.
    from models import ImageClassifier
    from models.components import MLP

    torch.manual_seed(0)
    module = ImageClassifier(MLP(16, 3, hidden_sizes=[8]), input_shape=(1, 4, 4), num_classes=3)
    batches = [(torch.randn(n, 1, 4, 4), torch.randint(0, 3, (n,))) for n in (5, 2, 7)]
    losses, correct = [], 0
    for x, y in batches:
        loss, logits = module.shared_step((x, y), "train")
        losses.append(float(loss.detach()) * len(y))
        correct += int((logits.argmax(1) == y).sum())
    expected_loss = sum(losses) / 14
    assert module.running_train_loss() == pytest.approx(expected_loss, rel=1e-6)
    module._update_train_metrics()
    assert float(module.train_loss.compute()) == pytest.approx(expected_loss, rel=1e-6)
    assert float(module.train_acc.compute()) == pytest.approx(correct / 14)
