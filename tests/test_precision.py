"""mimimi.precision: fp32 / bf16 / auto, and bf16 kept harmless (outputs close to fp32, fp32 where it matters)."""
import pytest
import torch

from mimimi import precision
from mimimi.nn import ComplexNet, ComplexNetConfig


@pytest.mark.parametrize("flags, want", [({"avx512f", "avx512_bf16"}, "bf16"), ({"amx_bf16"}, "bf16"),
                                         ({"avx512f", "avx2"}, "fp32"), (set(), "fp32")])
def test_auto_is_bf16_only_where_the_cpu_has_it(monkeypatch, flags, want):
    monkeypatch.setattr(precision, "cpu_flags", lambda: frozenset(flags))
    assert precision.resolve("auto", "cpu") == want
    assert precision.resolve("fp32", "cpu") == "fp32" and precision.resolve("bf16", "cpu") == "bf16"


def test_cpu_flags_read_from_cpuinfo(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu avx512f avx512_bf16\nbugs\t\t: none\n")
    assert precision.cpu_flags(info) == {"fpu", "avx512f", "avx512_bf16"}
    assert precision.cpu_flags(tmp_path / "missing") == frozenset()


def test_unknown_precision_is_an_error():
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("fp16", "cpu")


@pytest.mark.integration  # bf16 is emulated (slow) on a CPU without native bf16
@pytest.mark.parametrize("impl", ["block", "auto"])
def test_bf16_logits_and_embeddings_stay_close_to_fp32(seeded_one_thread, impl):
    net = ComplexNet(ComplexNetConfig(conv_impl=impl)).eval()  # Table I, fixed (seeded) weights
    x = torch.randn(4, 1, 513, 64, dtype=torch.cfloat)
    with torch.no_grad():
        ref = net.embed_and_classify(x)
        with precision.autocast("bf16", "cpu"):
            low = net.embed_and_classify(x)
    assert low.logits.total.dtype == torch.bfloat16  # it really ran in bf16
    a, b = ref.logits.total, low.logits.total.float()
    assert (a - b).norm() / a.norm() < 2e-2  # measured about 2e-3
    assert torch.nn.functional.cosine_similarity(ref.embedding, low.embedding.float()).min() > 0.999


@pytest.mark.integration  # a bf16 training step: emulated, slow without native bf16
def test_bf16_training_step_keeps_fp32_weights_statistics_and_loss(seeded_one_thread):
    from mimimi import kinds
    from mimimi.config import Config, merge

    cfg = merge(Config(), {"model": {"net": {"n_freq": 129}}, "features": {"n_fft": 256}})
    kind = kinds.get("complex")
    cfg = kind.resolve(cfg, 3)
    net = kind.build(cfg, 3).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x = torch.randn(6, 1, 129, 32, dtype=torch.cfloat)
    y = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3).float()
    with precision.autocast("bf16", "cpu"):
        loss, _ = kind.loss(net, (x, y), cfg)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    opt.step()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in net.parameters())
    bn = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and all(m.running_mean.dtype == m.running_var.dtype == torch.float32 for m in bn)
    assert all(torch.isfinite(m.running_var).all() for m in bn)
