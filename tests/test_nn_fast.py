"""The fast complex convolutions ("gauss", "auto") against the oracles: the textbook four-convolution
form, torch's native complex arithmetic, float64 gradcheck, and the whole network."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch.autograd import gradcheck

from helpers import crandn, stacked
from mimimi.nn import (
    ComplexConv2d,
    ComplexNet,
    ComplexNetConfig,
    ComplexToStacked,
    StackedToComplex,
    complex_conv2d,
    forward_flops,
)
from mimimi.nn.complex import CONV_IMPLS, GAUSS_MIN_IN_CHANNELS, ConvChoice, auto_conv_impl

# A small network whose blocks 2..5 have GAUSS_MIN_IN_CHANNELS complex inputs, so "auto" uses
# both kernels on CPU: block 1 (1 input channel) "block", the others "gauss".
WIDE = ComplexNetConfig(n_ids=3, channels=(8, 8, 8, 8, 8), att_hidden=4)
WIDE_INPUT = (2, 1, 33, 32)


pytestmark = pytest.mark.usefixtures("seeded_one_thread")


CONV_CASES = [  # (in, out, kernel, stride, padding): Table I's shapes in miniature, both auto branches
    (1, 3, (7, 5), (2, 2), (3, 2)),
    (3, 4, (5, 2), (2, 1), (2, 0)),
    (2, 2, (1, 1), (1, 1), (0, 0)),
    (8, 5, (5, 3), (2, 2), (2, 1)),
    (9, 4, (7, 5), (2, 2), (3, 2)),
]


# ---------------------------------------------------------------- the rule


def test_auto_rule_on_cpu():
    assert auto_conv_impl(1, 45, (7, 5), (2, 2), "cpu") == ConvChoice("block", True)
    assert auto_conv_impl(GAUSS_MIN_IN_CHANNELS - 1, 4, (3, 3), (1, 1), "cpu").impl == "block"
    for i in (GAUSS_MIN_IN_CHANNELS, 45, 90):
        assert auto_conv_impl(i, 90, (5, 3), (2, 2), torch.device("cpu")) == ConvChoice("gauss", True)


def test_auto_rule_elsewhere_keeps_block_and_layout():
    assert auto_conv_impl(90, 90, (5, 3), (2, 2), "cuda") == ConvChoice("block", False)
    assert auto_conv_impl(90, 90, (5, 3), (2, 2), "meta") == ConvChoice("block", False)


# ---------------------------------------------------------------- equal to the oracles


@pytest.mark.parametrize("impl", ["gauss", "auto"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("i, o, k, s, p", CONV_CASES)
def test_fast_equals_textbook_float32(impl, bias, i, o, k, s, p):
    conv = ComplexConv2d(i, o, k, s, p, bias=bias, impl="textbook")
    x = stacked(crandn(2, i, 19, 11))
    expected = conv(x)
    conv.impl = impl  # same parameters, other kernel
    got = conv(x)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("impl", ["gauss", "auto"])
@pytest.mark.parametrize("i, o, k, s, p", CONV_CASES)
def test_fast_equals_torch_complex_arithmetic_float64(impl, i, o, k, s, p):
    conv = ComplexConv2d(i, o, k, s, p, impl=impl).double()
    z = crandn(2, i, 19, 11, dtype=torch.complex128)
    w = torch.complex(conv.weight_r, conv.weight_i).detach()
    b = torch.complex(conv.bias_r, conv.bias_i).detach()
    expected = F.conv2d(z, w, b, stride=s, padding=p)  # torch's native complex convolution
    got = StackedToComplex()(conv(ComplexToStacked()(z)))
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("impl", ["block", "textbook", "gauss", "auto"])
def test_every_impl_accepts_channels_last_input(impl):
    conv = ComplexConv2d(8, 3, (3, 3), (2, 1), (1, 1), impl="textbook")
    x = stacked(crandn(2, 8, 9, 7))
    expected = conv(x)
    conv.impl = impl
    torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last)), expected,
                               rtol=1e-5, atol=1e-5)


def test_auto_runs_channels_last_on_cpu():
    x = stacked(crandn(2, 1, 17, 8))
    assert ComplexConv2d(1, 3, (3, 3), impl="auto")(x).is_contiguous(memory_format=torch.channels_last)
    assert not ComplexConv2d(1, 3, (3, 3), impl="block")(x).is_contiguous(memory_format=torch.channels_last)


def test_gauss_counts_three_quarters_of_the_flops():
    """Three real convolutions of I -> O channels instead of one of 2I -> 2O (= four of I -> O)."""
    conv = ComplexConv2d(8, 6, (5, 3), (2, 2), (2, 1), bias=False)
    x = stacked(crandn(1, 8, 33, 16))
    flops = {}
    for impl in ("block", "textbook", "gauss"):
        conv.impl = impl
        with torch.no_grad(), torch.utils.flop_counter.FlopCounterMode(display=False) as counter:
            conv(x)
        flops[impl] = counter.get_total_flops()
    assert flops["block"] == flops["textbook"] > 0
    assert 4 * flops["gauss"] == 3 * flops["block"]


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("impl", ["gauss", "auto"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("in_ch", [2, GAUSS_MIN_IN_CHANNELS])  # both branches of "auto"
def test_fast_conv_gradcheck_float64(impl, bias, in_ch):
    x = torch.randn(2, 2 * in_ch, 7, 6, dtype=torch.float64, requires_grad=True)
    w_r = torch.randn(3, in_ch, 3, 2, dtype=torch.float64, requires_grad=True)
    w_i = torch.randn(3, in_ch, 3, 2, dtype=torch.float64, requires_grad=True)
    b = [torch.randn(3, dtype=torch.float64, requires_grad=True) for _ in range(2)] if bias else []

    def f(x, w_r, w_i, *b):
        b_r, b_i = b if b else (None, None)
        return complex_conv2d(x, w_r, w_i, b_r, b_i, stride=(2, 1), padding=(1, 1), impl=impl)

    assert gradcheck(f, (x, w_r, w_i, *b))


@pytest.mark.parametrize("impl", ["gauss", "auto"])
def test_fast_gradients_equal_textbook(impl):
    conv = ComplexConv2d(8, 3, (3, 3), (1, 2), (1, 1)).double()
    x = torch.randn(2, 16, 8, 8, dtype=torch.float64)
    grads = {}
    for name in ("textbook", impl):
        conv.zero_grad()
        conv.impl = name
        xx = x.clone().requires_grad_()
        (conv(xx) ** 2).sum().backward()
        grads[name] = [xx.grad, *(p.grad.clone() for p in conv.parameters())]
    for a, b in zip(grads["textbook"], grads[impl]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-10)


# ---------------------------------------------------------------- the network


@pytest.mark.parametrize("impl", ["gauss", "auto"])
def test_fast_network_equals_textbook_network(impl):
    net = ComplexNet(dataclasses.replace(WIDE, conv_impl="textbook"))
    x = crandn(*WIDE_INPUT)
    for train in (False, True):  # running statistics and batch statistics
        net.train(train)
        with torch.no_grad():
            net.set_conv_impl("textbook")
            expected = net(x)
            net.set_conv_impl(impl)
            got = net(x)
        for u, v in zip(got, expected):
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-5)


def test_auto_network_gradcheck_float64():
    net = ComplexNet(dataclasses.replace(WIDE, conv_impl="auto")).double().train()
    assert [b.conv.impl for b in net.blocks] == ["auto"] * 5
    x = crandn(*WIDE_INPUT, dtype=torch.complex128).requires_grad_()
    assert gradcheck(lambda z: tuple(net(z)), (x,), fast_mode=True)
    names = ["blocks.1.conv.weight_r", "blocks.1.conv.weight_i"]  # a Gauss layer's parameters
    params = {k: v.detach().clone().requires_grad_() for k, v in net.named_parameters() if k in names}
    x = x.detach()

    def f(w_r, w_i):
        return tuple(torch.func.functional_call(net, {names[0]: w_r, names[1]: w_i}, (x,)))

    assert gradcheck(f, tuple(params[k] for k in names), fast_mode=True)


def test_auto_network_trains_like_textbook():
    """Same start, same batch: the same loss and parameter gradients (up to float32 rounding).

    Gradients, not an Adam step: a convolution bias in front of batch norm has a gradient of
    rounding noise only, which Adam would blow up to a full step of random sign.
    """
    x, y = crandn(*WIDE_INPUT), torch.tensor([0, 2])
    grads, losses = {}, {}
    for impl in ("textbook", "auto"):
        torch.manual_seed(1)
        net = ComplexNet(dataclasses.replace(WIDE, conv_impl=impl)).train()
        loss = sum(F.cross_entropy(lg, y) for lg in net(x))
        loss.backward()
        losses[impl] = loss.detach()
        grads[impl] = {k: p.grad for k, p in net.named_parameters()}
    torch.testing.assert_close(losses["auto"], losses["textbook"], rtol=1e-5, atol=1e-6)
    for name, g in grads["textbook"].items():
        torch.testing.assert_close(grads["auto"][name], g, rtol=1e-4, atol=1e-5, msg=name)


def test_flop_count_follows_the_kernels():
    """forward_flops counts what runs: "auto" on CPU saves 1/4 of every Gauss layer's convolution."""
    block = forward_flops(ComplexNet(dataclasses.replace(WIDE, conv_impl="block")), WIDE_INPUT)
    auto = forward_flops(ComplexNet(dataclasses.replace(WIDE, conv_impl="auto")), WIDE_INPUT)
    assert 0.75 * block < auto < block


def test_config_and_switch_accept_the_new_impls():
    for impl in CONV_IMPLS:
        assert ComplexNetConfig(conv_impl=impl).conv_impl == impl
        ComplexConv2d(1, 1, 3, impl=impl)
    net = ComplexNet(WIDE)
    net.set_conv_impl("auto")
    assert {b.conv.impl for b in net.blocks} == {"auto"}
    with pytest.raises(ValueError):
        net.set_conv_impl("fft")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        complex_conv2d(torch.zeros(1, 2, 3, 3), torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1), impl="fft")
