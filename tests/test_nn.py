"""Model package: complex layers against oracles, gradchecks, Table I shapes, variants, overfitting."""
from __future__ import annotations

import dataclasses
import typing

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from helpers import crandn, stacked
from mimimi.nn import (
    AEConfig,
    AttentionBlock,
    ComplexBatchNorm2d,
    ComplexBlock,
    ComplexConv2d,
    ComplexNet,
    ComplexNetConfig,
    ComplexPReLU,
    ComplexToStacked,
    DenseAE,
    Logits,
    SquaredMagnitude,
    StackedToComplex,
    complex_conv2d,
    conv_padding,
    forward_flops,
    num_parameters,
    reconstruction_error,
)

# A tiny network with Table I's kernels and strides: 33 x 32 input -> 2 x 1 after block 5.
TINY = ComplexNetConfig(n_ids=2, channels=(2, 4, 4, 4, 2), att_hidden=4)
TINY_INPUT = (2, 1, 33, 32)


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


# ---------------------------------------------------------------- boundaries


@pytest.mark.parametrize("dtype, real", [(torch.complex64, torch.float32), (torch.complex128, torch.float64)])
def test_complex_to_stacked_round_trip(dtype, real):
    z = crandn(2, 3, 5, 4, dtype=dtype)
    s = ComplexToStacked()(z)
    assert s.shape == (2, 6, 5, 4) and s.dtype == real
    assert torch.equal(s[:, :3], z.real) and torch.equal(s[:, 3:], z.imag)
    assert torch.equal(StackedToComplex()(s), z)
    torch.testing.assert_close(SquaredMagnitude()(s), z.abs() ** 2)


def test_complex_to_stacked_rejects_real():
    with pytest.raises(TypeError, match="complex"):
        ComplexToStacked()(torch.randn(1, 1, 4, 4))


# ---------------------------------------------------------------- complex convolution


CONV_CASES = [  # (in, out, kernel, stride, padding)
    (1, 3, (7, 5), (2, 2), (3, 2)),
    (3, 4, (5, 2), (2, 1), (2, 0)),
    (2, 2, (1, 1), (1, 1), (0, 0)),
]


@pytest.mark.parametrize("i, o, k, s, p", CONV_CASES)
def test_conv_block_equals_textbook_float32(i, o, k, s, p):
    conv = ComplexConv2d(i, o, k, s, p)
    x = stacked(crandn(2, i, 19, 11))
    y_block = conv(x)
    conv.impl = "textbook"  # same parameters, other kernel
    y_text = conv(x)
    assert y_block.shape == y_text.shape
    torch.testing.assert_close(y_block, y_text, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["block", "textbook"])
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("i, o, k, s, p", CONV_CASES)
def test_conv_equals_torch_complex_arithmetic(impl, dtype, i, o, k, s, p):
    conv = ComplexConv2d(i, o, k, s, p, impl=impl)
    if dtype == torch.complex128:
        conv.double()
    z = crandn(2, i, 19, 11, dtype=dtype)
    w = torch.complex(conv.weight_r, conv.weight_i).detach()
    b = torch.complex(conv.bias_r, conv.bias_i).detach()
    expected = F.conv2d(z, w, b, stride=s, padding=p)  # torch's native complex convolution
    got = StackedToComplex()(conv(ComplexToStacked()(z)))
    tol = 1e-5 if dtype == torch.complex64 else 1e-12
    torch.testing.assert_close(got, expected, rtol=tol, atol=tol)


def test_conv_equals_explicit_multiply_accumulate():
    """Independent of F.conv2d: sum over (c, kF, kT) of complex products via unfold."""
    conv = ComplexConv2d(2, 3, (3, 2), (2, 1), (1, 0), bias=False).double()
    z = crandn(1, 2, 7, 5, dtype=torch.complex128)
    w = torch.complex(conv.weight_r, conv.weight_i).detach()
    cols = torch.complex(  # (1, 2*3*2, L)
        F.unfold(z.real, (3, 2), padding=(1, 0), stride=(2, 1)),
        F.unfold(z.imag, (3, 2), padding=(1, 0), stride=(2, 1)),
    )
    expected = (w.reshape(3, -1) @ cols).reshape(1, 3, 4, 4)  # (7+2-3)//2+1 = 4, (5-2)+1 = 4
    got = StackedToComplex()(conv(stacked(z)))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["block", "textbook"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv_gradcheck_float64(impl, bias):
    x = torch.randn(2, 4, 7, 6, dtype=torch.float64, requires_grad=True)  # 2 complex channels
    w_r = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    w_i = torch.randn(3, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(2)] if bias else [None, None]

    def f(x, w_r, w_i, *b):
        b_r, b_i = b if b else (None, None)
        return complex_conv2d(x, w_r, w_i, b_r, b_i, stride=(2, 1), padding=(1, 1), impl=impl)

    assert gradcheck(f, (x, w_r, w_i, *[t for t in b if t is not None]))


def test_conv_block_and_textbook_gradients_agree():
    conv = ComplexConv2d(2, 3, (3, 3), (1, 2), (1, 1)).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    grads = {}
    for impl in ("block", "textbook"):
        conv.zero_grad()
        conv.impl = impl
        (conv(x) ** 2).sum().backward()
        grads[impl] = [p.grad.clone() for p in conv.parameters()]
    assert all(g.abs().sum() > 0 for g in grads["block"])  # gradients reach W_r, W_i through torch.cat
    for a, b in zip(grads["block"], grads["textbook"]):
        torch.testing.assert_close(a, b)


def test_conv_rejects_unknown_impl():
    with pytest.raises(ValueError):
        ComplexConv2d(1, 1, 3, impl="fft")


# ---------------------------------------------------------------- batch norm, PReLU, block


def test_batchnorm_normalises_parts_separately():
    bn = ComplexBatchNorm2d(3)
    assert bn.num_features == 6 and num_parameters(bn) == 12
    z = crandn(4, 3, 5, 6) * 3 + (1 - 2j)
    y = bn(stacked(z))
    ref = torch.nn.BatchNorm2d(3)
    torch.testing.assert_close(y[:, :3], ref(z.real))
    torch.testing.assert_close(y[:, 3:], torch.nn.BatchNorm2d(3)(z.imag))
    mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(mean, torch.zeros(6), atol=1e-5, rtol=0)
    torch.testing.assert_close(var, torch.ones(6), atol=1e-3, rtol=0)


def test_prelu_separate_slopes_for_real_and_imag():
    act = ComplexPReLU(2)
    with torch.no_grad():
        act.weight.copy_(torch.tensor([0.1, 0.2, 0.3, 0.4]))  # re0, re1, im0, im1
    z = torch.full((1, 2, 1, 1), -1 - 1j)
    out = StackedToComplex()(act(stacked(z))).flatten()
    torch.testing.assert_close(out, torch.tensor([-0.1 - 0.3j, -0.2 - 0.4j]))
    z = torch.full((1, 2, 1, 1), 2 + 3j)
    torch.testing.assert_close(StackedToComplex()(act(stacked(z))), z)  # identity on the positive quadrant


@pytest.mark.parametrize(
    "module",
    [
        lambda: ComplexBatchNorm2d(2),
        lambda: ComplexPReLU(2),
        lambda: ComplexBlock(2, 3, (3, 2), (2, 1), (1, 0)),
        lambda: ComplexBlock(2, 3, (3, 2), (2, 1), (1, 0), impl="textbook"),
    ],
    ids=["bn", "prelu", "block", "block-textbook"],
)
def test_layer_gradcheck_float64(module):
    m = module().double().train()
    x = torch.randn(3, 4, 6, 5, dtype=torch.float64, requires_grad=True)
    assert gradcheck(m, (x,))


# ---------------------------------------------------------------- attention


def test_attention_shapes_and_residual():
    att = AttentionBlock(channels=6, att_channels=8, hidden=5)
    f_t = torch.randn(2, 6, 9, 3)
    a = att.attention(f_t)
    assert a.shape == (2, 6) and ((a > 0) & (a < 1)).all()
    out = att(f_t)
    assert out.shape == f_t.shape
    torch.testing.assert_close(out, (1 + a[:, :, None, None]) * f_t)


def test_attention_gates_differ():
    sig = AttentionBlock(gate="sigmoid")
    soft = AttentionBlock(gate="softmax")
    soft.load_state_dict(sig.state_dict())  # identical weights: only the gate differs
    f_t = torch.randn(2, 8, 9, 3)
    a_soft = soft.attention(f_t)
    torch.testing.assert_close(a_soft.sum(dim=1), torch.ones(2))
    assert not torch.allclose(sig(f_t), soft(f_t))
    with pytest.raises(ValueError):
        AttentionBlock(gate="tanh")


@pytest.mark.parametrize("gate", ["sigmoid", "softmax"])
def test_attention_gradcheck_float64(gate):
    att = AttentionBlock(channels=4, att_channels=3, hidden=5, gate=gate).double()
    x = torch.randn(2, 4, 7, 3, dtype=torch.float64, requires_grad=True)
    assert gradcheck(att, (x,))


# ---------------------------------------------------------------- the network


def _record_shapes(net: ComplexNet) -> list[tuple[str, tuple[int, ...]]]:
    shapes: list[tuple[str, tuple[int, ...]]] = []
    names = [f"block{i + 1}" for i in range(len(net.blocks))] + [
        "magnitude_conv",
        "complex_conv",
        "attention",
        "total_conv",
    ]
    modules = [*net.blocks, net.magnitude_conv, net.complex_conv, net.attention, net.total_conv]
    for name, m in zip(names, modules):
        m.register_forward_hook(lambda _m, _i, out, name=name: shapes.append((name, tuple(out.shape))))
    return shapes


@pytest.mark.parametrize("n_ids", [3, 4])
def test_table1_shapes(n_ids):
    net = ComplexNet(ComplexNetConfig(n_ids=n_ids)).eval()
    shapes = _record_shapes(net)
    with torch.no_grad():
        out = net(crandn(2, 1, 513, 64))
    n = n_ids
    assert shapes == [
        ("block1", (2, 2 * 45, 257, 32)),  # stacked: 2 x complex channels
        ("block2", (2, 2 * 90, 129, 16)),
        ("block3", (2, 2 * 90, 65, 8)),
        ("block4", (2, 2 * 90, 33, 4)),
        ("block5", (2, 2 * 45, 17, 3)),
        ("magnitude_conv", (2, n, 9, 3)),
        ("complex_conv", (2, n, 9, 3)),
        ("attention", (2, 2 * n, 9, 3)),
        ("total_conv", (2, n, 9, 3)),
    ]
    assert isinstance(out, Logits)
    assert all(t.shape == (2, n) and torch.isfinite(t).all() for t in out)
    assert net.attention.conv.out_channels == 2 * n  # Table I's 8 for n = 4


def test_table1_shapes_without_padding():
    net = ComplexNet(ComplexNetConfig(padding="none")).eval()
    shapes = _record_shapes(net)
    with torch.no_grad():
        net(crandn(1, 1, 513, 64))
    assert [s for _, s in shapes] == [
        (1, 90, 254, 30),
        (1, 180, 124, 13),
        (1, 180, 60, 6),
        (1, 180, 28, 2),
        (1, 90, 12, 1),
        (1, 4, 4, 1),
        (1, 4, 4, 1),
        (1, 8, 4, 1),
        (1, 4, 4, 1),
    ]


def test_parameter_and_flop_counts():
    """The figures quoted in the network docstring (seed: 859,366 params, 3.09 GFLOP): the block form's
    FLOPs (the default "auto" counts what runs, fewer on CPU; test_nn_fast covers it)."""
    same = ComplexNet(ComplexNetConfig(conv_impl="block"))
    none = ComplexNet(ComplexNetConfig(padding="none", conv_impl="block"))
    assert num_parameters(same) == num_parameters(none) == 860_026
    assert forward_flops(same) == 3_094_620_712
    assert forward_flops(none) == 2_332_283_264
    textbook = ComplexNet(ComplexNetConfig(conv_impl="textbook"))
    assert forward_flops(textbook) == forward_flops(same)


def test_conv_padding_rule():
    assert conv_padding((7, 5), "same") == (3, 2)
    assert conv_padding((5, 2), "same") == (2, 0)  # even kernel: never grows the map
    assert conv_padding((1, 1), "same") == (0, 0)
    assert conv_padding((7, 5), "none") == (0, 0)
    with pytest.raises(ValueError):
        conv_padding((3, 3), "valid")


def test_block_and_textbook_networks_agree():
    net = ComplexNet(TINY).eval()
    x = crandn(*TINY_INPUT)
    with torch.no_grad():
        a = net(x)
        net.set_conv_impl("textbook")
        b = net(x)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


def test_complex128_input_and_dtype_mismatch():
    net = ComplexNet(TINY).double().eval()
    out = net(crandn(*TINY_INPUT, dtype=torch.complex128))
    assert all(t.dtype == torch.float64 for t in out)
    with pytest.raises(TypeError, match="double"):
        ComplexNet(TINY)(crandn(*TINY_INPUT, dtype=torch.complex128))
    with pytest.raises(TypeError, match="complex"):
        ComplexNet(TINY)(torch.randn(*TINY_INPUT))  # a real input to the complex variant


def test_network_gradcheck_float64():
    net = ComplexNet(TINY).double().train()
    x = crandn(*TINY_INPUT, dtype=torch.complex128).requires_grad_()
    assert gradcheck(lambda z: tuple(net(z)), (x,), fast_mode=True)
    # and with respect to the first complex convolution's parameters
    names = ["blocks.0.conv.weight_r", "blocks.0.conv.weight_i"]
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters() if k in names}
    x = x.detach()

    def f(w_r, w_i):
        return tuple(torch.func.functional_call(net, {names[0]: w_r, names[1]: w_i}, (x,)))

    assert gradcheck(f, tuple(params[k] for k in names), fast_mode=True)


def _rotate_phase(x: torch.Tensor) -> torch.Tensor:
    phi = torch.rand(x.shape, dtype=x.real.dtype) * 2 * torch.pi
    return x * torch.polar(torch.ones_like(phi), phi)  # e^{i phi} per bin: |x| unchanged


def test_magnitude_variant_ignores_phase():
    x = crandn(*TINY_INPUT)
    xr = _rotate_phase(x)
    torch.testing.assert_close(xr.abs(), x.abs())
    mag = ComplexNet(dataclasses.replace(TINY, input="magnitude")).eval()
    cplx = ComplexNet(TINY).eval()
    with torch.no_grad():
        for a, b in zip(mag(x), mag(xr)):
            torch.testing.assert_close(a, b)
        changed = [not torch.allclose(a, b, atol=1e-4) for a, b in zip(cplx(x), cplx(xr))]
    assert all(changed)
    # the magnitude variant accepts a real |STFT| as well
    with torch.no_grad():
        torch.testing.assert_close(mag(x.abs()).total, mag(x).total)


def test_gates_change_the_network():
    a = ComplexNet(dataclasses.replace(TINY, gate="sigmoid")).eval()
    b = ComplexNet(dataclasses.replace(TINY, gate="softmax")).eval()
    b.load_state_dict(a.state_dict())
    x = crandn(*TINY_INPUT)
    with torch.no_grad():
        la, lb = a(x), b(x)
    torch.testing.assert_close(la.magnitude, lb.magnitude)  # the side branches do not see the gate
    assert not torch.allclose(la.total, lb.total)


@pytest.mark.integration  # trains a network: tens of seconds on a CPU without AVX-512
def test_network_overfits_one_batch():
    """8 fixed random segments, 2 IDs: the fused branch must memorise them."""
    cfg = ComplexNetConfig(n_ids=2, channels=(4, 8, 8, 8, 4), att_hidden=8)
    net = ComplexNet(cfg).train()
    x = crandn(8, 1, 33, 32)
    y = torch.tensor([0, 1] * 4)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(100):
        out = net(x)
        loss = sum(F.cross_entropy(lg, y) for lg in out)  # the seed's equal-weight sum
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = net(x)
        assert F.cross_entropy(out.total, y).item() < 0.05
        assert (out.total.argmax(dim=1) == y).all()
        out = net.eval()(x)  # running statistics have caught up too
    assert (out.total.argmax(dim=1) == y).all()


def test_config_validation_and_schema():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ComplexNetConfig().n_ids = 3  # type: ignore[misc]
    for bad in (
        dict(n_ids=1),
        dict(channels=(4, 8)),
        dict(gate="relu"),
        dict(padding="valid"),
        dict(input="phase"),
        dict(conv_impl="fft"),
        dict(head_kernel=(0, 1)),
    ):
        with pytest.raises(ValueError):
            ComplexNetConfig(**bad)
    hints = typing.get_type_hints(ComplexNetConfig)  # the typed config tree resolves these
    assert hints["gate"] == typing.Literal["sigmoid", "softmax"]
    assert hints["att_channels"] == typing.Optional[int]


# ---------------------------------------------------------------- autoencoder baseline


def test_autoencoder_shapes_and_size():
    ae = DenseAE(AEConfig())
    # Linear weights+biases (640-128-128-128-128-8-128-128-128-128-640) + BN gamma/beta (8 x 128 + 8)
    assert num_parameters(ae) == 265_864 + 2_064
    x = torch.randn(6, 640)
    out = ae(x)
    assert out.x_hat.shape == (6, 640)
    assert reconstruction_error(x, out.x_hat).shape == (6,)
    ae.eval()
    assert ae(torch.randn(2, 3, 640)).x_hat.shape == (2, 3, 640)  # leading dims flattened and restored
    with pytest.raises(ValueError):
        ae(torch.randn(2, 128))


def test_reconstruction_error_is_mse():
    x, x_hat = torch.randn(3, 10), torch.randn(3, 10)
    torch.testing.assert_close(reconstruction_error(x, x_hat), F.mse_loss(x_hat, x, reduction="none").mean(dim=1))


@pytest.mark.integration  # trains a network: tens of seconds on a CPU without AVX-512
def test_autoencoder_overfits_one_batch():
    ae = DenseAE(AEConfig(n_mels=16, n_stack=2)).train()
    x = torch.randn(32, 32)
    opt = torch.optim.Adam(ae.parameters(), lr=1e-2)
    with torch.no_grad():
        start = reconstruction_error(x, ae(x).x_hat).mean().item()
    for _ in range(100):
        loss = reconstruction_error(x, ae(x).x_hat).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.01 * start
