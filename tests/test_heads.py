"""The cosine heads of ``model.net.head`` (``mimimi.nn.heads``: arcface, adacos, subcluster_adacos, adaproj)
against independent numpy computations: the logits and embedding, AdaCos's scale formulas, the training loss
with hard, mixup and set-of-classes targets, gradients, a few training steps on a separable toy problem,
the checkpoint round trip and the config checks. Unit tier: tiny tensors, no data."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from torch.autograd import gradcheck

from mimimi import kinds
from mimimi.checkpoint import build_model, load_checkpoint, save_checkpoint
from mimimi.config import Config, ConfigError, merge
from mimimi.nn import HEADS, ComplexNet, ComplexNetConfig, Logits, SubclusterHead, adacos_scale, build_head

pytestmark = pytest.mark.usefixtures("seeded_one_thread")

N, E, D, K, M = 3, 12, 8, 4, 3  # classes, backbone features, embedding_dim, subclusters, subspace_dim
COSINE = ["arcface", "adacos", "subcluster_adacos", "adaproj"]
NEW = ["adacos", "subcluster_adacos", "adaproj"]
ROOT = Path(__file__).resolve().parents[1]


def _cfg(head: str, **net) -> ComplexNetConfig:
    return ComplexNetConfig(n_ids=N, head=head, embedding_dim=D, subclusters=K, subspace_dim=M, **net)


def _head(head: str, trainable: bool = False, dtype: torch.dtype = torch.float32):
    """The head built in ``dtype`` (float64: adaproj's QR bases orthonormal to double precision)."""
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        return build_head(_cfg(head, trainable_centres=trainable), E)
    finally:
        torch.set_default_dtype(default)


# ----------------------------------------------------------------------------------- numpy oracles
def _np_embedding(head, e: np.ndarray) -> np.ndarray:
    """x̂ = normalise(BatchNorm1d(Linear(e))) in eval mode, written out."""
    lin, bn = head.projection[0], head.projection[1]
    y = e @ lin.weight.detach().numpy().T + lin.bias.detach().numpy()
    y = (y - bn.running_mean.numpy()) / np.sqrt(bn.running_var.numpy() + bn.eps)
    y = y * bn.weight.detach().numpy() + bn.bias.detach().numpy()
    return y / np.linalg.norm(y, axis=1, keepdims=True)


def _np_logsumexp(z: np.ndarray, axis: int) -> np.ndarray:
    top = z.max(axis=axis, keepdims=True)
    return np.log(np.exp(z - top).sum(axis=axis)) + top.squeeze(axis)


def _np_subcluster_logits(head, x: np.ndarray) -> np.ndarray:
    """(B, N, K) s·cos(x̂, W_{c,k})."""
    w = head.centres.detach().numpy()
    w = w / np.linalg.norm(w, axis=2, keepdims=True)
    return head.scale * np.einsum("bd,nkd->bnk", x, w)


def _np_logits(name: str, head, x: np.ndarray) -> np.ndarray:
    if name in ("arcface", "adacos"):
        w = head.centres.detach().numpy()
        return head.scale * x @ (w / np.linalg.norm(w, axis=1, keepdims=True)).T
    if name == "subcluster_adacos":
        return _np_logsumexp(_np_subcluster_logits(head, x), axis=2)
    # adaproj: the cosine between x̂ and its orthogonal projection p = Q Qᵀ x̂ onto the class subspace
    out = np.empty((len(x), N))
    for c, q in enumerate(head.bases.numpy()):
        p = x @ (q @ q.T)  # (B, D)
        out[:, c] = (x * p).sum(1) / np.linalg.norm(p, axis=1)
    return head.scale * out


def _np_class_log_probs(name: str, head, x: np.ndarray) -> np.ndarray:
    """log p(c | x) straight from the method's definition: for sub-cluster AdaCos one softmax over all N·K
    sub-cluster logits and a class's probability the sum of its sub-clusters'; else the softmax of the logits."""
    if name == "subcluster_adacos":
        z = _np_subcluster_logits(head, x).reshape(len(x), -1)  # (B, N·K)
        p = np.exp(z - _np_logsumexp(z, axis=1)[:, None]).reshape(len(x), N, K)
        return np.log(p.sum(2))
    z = _np_logits(name, head, x)
    return z - _np_logsumexp(z, axis=1)[:, None]


# ----------------------------------------------------------------------------------- the maths
def test_scale_formulas():
    for n in range(3, 50):
        assert adacos_scale(n) == pytest.approx(math.sqrt(2) * math.log(n - 1), rel=1e-12)
    assert adacos_scale(2) == adacos_scale(3) > 0  # the formula's 0 for two logits is floored
    with pytest.raises(ValueError, match="n >= 2"):
        adacos_scale(1)
    assert _head("arcface").scale == ComplexNetConfig().arcface_scale
    assert _head("adacos").scale == pytest.approx(math.sqrt(2) * math.log(N - 1))
    assert _head("subcluster_adacos").scale == pytest.approx(math.sqrt(2) * math.log(N * K - 1))
    assert _head("adaproj").scale == pytest.approx(math.sqrt(2) * math.log(N * M - 1))


@pytest.mark.parametrize("name", COSINE)
def test_logits_and_embedding_match_numpy(name):
    head = _head(name, dtype=torch.float64).eval()
    e = torch.randn(6, E, dtype=torch.float64)
    with torch.no_grad():
        out = head(e)
    x = _np_embedding(head, e.numpy())
    np.testing.assert_allclose(out.embedding.numpy(), x, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(out.embedding.numpy(), axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(out.logits.numpy(), _np_logits(name, head, x), rtol=1e-9, atol=1e-12)
    if name == "adaproj":  # each class basis orthonormal, and the logit the norm of Q_cᵀ x̂, within [0, s]
        for q in head.bases.numpy():
            np.testing.assert_allclose(q.T @ q, np.eye(M), atol=1e-12)
        np.testing.assert_allclose(out.logits.numpy() / head.scale,
                                   np.linalg.norm(np.einsum("bd,ndm->bnm", x, head.bases.numpy()), axis=2), rtol=1e-6)
        assert (out.logits >= 0).all() and (out.logits <= head.scale + 1e-9).all()


def test_one_subcluster_is_adacos_with_that_many_classes():
    torch.manual_seed(1)
    sub = SubclusterHead(E, N, 1, D, trainable=False).eval()
    x = F.normalize(torch.randn(4, D), dim=1)
    w = F.normalize(sub.centres[:, 0], dim=1)
    torch.testing.assert_close(sub.logits(x), adacos_scale(N) * x @ w.T)


# ----------------------------------------------------------------------------------- the loss and its targets
def _fused_loss(name: str, total: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``Classifier._loss`` with only the fused head weighted: the loss training and validation compute."""
    cfg = merge(Config(), {"model": {"net": {"head": name}}, "train": {"loss_weights": [0.0, 0.0, 1.0]}})
    zeros = torch.zeros_like(total)
    return kinds.get("complex")._loss(Logits(zeros, zeros, total), target, cfg, reduction="none")


@pytest.mark.parametrize("name", NEW)
def test_loss_is_the_methods_cross_entropy(name):
    head = _head(name, dtype=torch.float64).eval()
    e = torch.randn(5, E, dtype=torch.float64)
    with torch.no_grad():
        total = head(e).logits
    log_p = _np_class_log_probs(name, head, _np_embedding(head, e.numpy()))  # (5, N)
    y = torch.tensor([0, 2, 1, 1, 0])
    hard = _fused_loss(name, total, F.one_hot(y, N).double())
    np.testing.assert_allclose(hard.numpy(), -log_p[np.arange(5), y.numpy()], rtol=1e-6)
    # mixup's soft targets: −Σ_c y_c log p(c), linear in the targets
    soft = torch.zeros(5, N, dtype=torch.float64)
    soft[:, 0], soft[:, 2] = 0.3, 0.7
    mixed = _fused_loss(name, total, soft)
    np.testing.assert_allclose(mixed.numpy(), -(0.3 * log_p[:, 0] + 0.7 * log_p[:, 2]), rtol=1e-6)
    torch.testing.assert_close(mixed, 0.3 * _fused_loss(name, total, F.one_hot(torch.zeros(5, dtype=torch.long), N).double())
                               + 0.7 * _fused_loss(name, total, F.one_hot(torch.full((5,), 2), N).double()))
    # a set of classes (an ID owning several with train.attributes): −log of their summed probability; a set
    # of one class is the plain loss
    one = _fused_loss(name, total, F.one_hot(y, N).bool())
    torch.testing.assert_close(one.float(), hard.float())
    member = torch.tensor([[True, True, False]] * 5)
    np.testing.assert_allclose(_fused_loss(name, total, member).numpy(),
                               -np.log(np.exp(log_p[:, 0]) + np.exp(log_p[:, 1])), rtol=1e-6)


@pytest.mark.parametrize(("name", "trainable"), [("adacos", False), ("adacos", True), ("subcluster_adacos", False),
                                                 ("subcluster_adacos", True), ("adaproj", False)])
def test_gradients_reach_the_projection_and_learned_centres_only(name, trainable):
    head = _head(name, trainable).train()
    out = head(torch.randn(6, E))
    F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    for p in head.projection.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    params, buffers = dict(head.named_parameters()), dict(head.named_buffers())
    fixed = "bases" if name == "adaproj" else "centres"
    if trainable:
        assert params["centres"].grad.abs().sum() > 0
    else:
        assert fixed in buffers and fixed not in params  # a buffer: in the state dict, never in the optimiser


@pytest.mark.parametrize("name", COSINE)
def test_head_gradients_against_finite_differences(name):
    head = _head(name, dtype=torch.float64).eval()
    e = torch.randn(3, E, dtype=torch.float64, requires_grad=True)
    assert gradcheck(lambda v: head(v).logits, (e,))


@pytest.mark.parametrize("name", NEW)
def test_a_few_steps_separate_a_toy_problem(name):
    """Three well-separated Gaussian clusters of backbone features: 40 Adam steps on the head alone lower the
    loss and classify every point."""
    head = _head(name).train()
    y = torch.arange(N).repeat(10)
    e = 3 * torch.randn(N, E)[y] + 0.3 * torch.randn(len(y), E)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    losses = []
    for _ in range(40):
        loss = F.cross_entropy(head(e).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():
        pred = head.eval()(e).logits.argmax(1)
    assert losses[-1] < 0.8 * losses[0] and (pred == y).all(), losses[::8]


# ----------------------------------------------------------------------------------- the network and the kind
def _net_config(name: str) -> Config:
    return merge(Config(), {"features": {"n_fft": 128},
                            "model": {"net": {"head": name, "channels": [4, 8, 8, 8, 4], "n_freq": 65,
                                              "embedding_dim": D, "subclusters": K, "subspace_dim": M,
                                              "trainable_centres": name == "subcluster_adacos"}}})


@pytest.mark.parametrize("name", NEW)
def test_segment_outputs_with_a_cosine_head(name):
    cfg = _net_config(name)
    model = build_model(cfg, 4).eval()
    x = torch.randn(3, 1, 65, 32, dtype=torch.cfloat)
    targets = torch.tensor([[0, 1], [2, -1], [3, -1]])  # the first segment's ID owns classes 0 and 1
    with torch.no_grad():
        out = kinds.get("complex").segment_outputs(model, x, targets, cfg)
        total = model(x).total
    log_p = total.float().log_softmax(1)
    torch.testing.assert_close(out.log_probs, log_p)
    want = -torch.stack([torch.logaddexp(log_p[0, 0], log_p[0, 1]), log_p[1, 2], log_p[2, 3]])
    torch.testing.assert_close(out.native, want)
    assert out.embedding.shape == (3, D)
    torch.testing.assert_close(out.embedding.norm(dim=1), torch.ones(3))
    assert torch.isfinite(out.loss).all()


@pytest.mark.parametrize("name", COSINE)
def test_checkpoint_round_trip_gives_identical_outputs(name, tmp_path):
    cfg = _net_config(name)
    model = build_model(cfg, N)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    x = torch.randn(4, 1, 65, 32, dtype=torch.cfloat)
    for _ in range(2):  # move the weights and the batch-norm statistics off their start
        loss = F.cross_entropy(model(x).total, torch.tensor([0, 1, 2, 0]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        before = model.embed_and_classify(x)
    save_checkpoint(tmp_path / "best.pt", model, cfg, {"00": 0, "01": 1, "02": 2})
    torch.manual_seed(123)  # the loaded network draws other random centres / bases before the state overwrites them
    loaded = load_checkpoint(tmp_path / "best.pt")
    assert loaded.cfg.model.net == cfg.model.net
    with torch.no_grad():
        after = loaded.model.embed_and_classify(x)
    for a, b in zip((*before.logits, before.embedding), (*after.logits, after.embedding)):
        assert torch.equal(a, b)


def test_arcface_state_from_before_the_heads_module_loads():
    """ArcFace checkpoints written before ``mimimi.nn.heads`` named ``projection.*`` and ``centres`` on the
    network itself."""
    cfg = _net_config("arcface").model.net
    model = ComplexNet(cfg).eval()
    old = {k.removeprefix("head."): v for k, v in model.state_dict().items()}
    assert "centres" in old and "projection.0.weight" in old
    torch.manual_seed(7)
    again = ComplexNet(cfg).eval()
    again.load_state_dict(old)
    x = torch.randn(2, 1, 65, 32, dtype=torch.cfloat)
    with torch.no_grad():
        assert torch.equal(model(x).total, again(x).total)


# ----------------------------------------------------------------------------------- config and search
def test_defaults_and_config_checks_in_one_line():
    net = Config().model.net
    assert (net.head, net.subclusters, net.subspace_dim, net.trainable_centres) == ("gap", 16, 16, False)
    bad = [({"head": "cosface"}, "model.net.head must be one of"),
           ({"subclusters": 0}, "model.net: subclusters must be >= 1"),
           ({"subspace_dim": 0}, "model.net: subspace_dim must be in"),
           ({"head": "adaproj", "embedding_dim": 8, "subspace_dim": 9}, "model.net: subspace_dim must be in"),
           ({"trainable_centres": "yes"}, "model.net.trainable_centres must be bool")]
    for net_overrides, message in bad:
        with pytest.raises(ConfigError, match="^" + message) as err:
            merge(Config(), {"model": {"net": net_overrides}})
        assert "\n" not in str(err.value)
    # the subspace only has to fit the embedding when adaproj uses it
    assert merge(Config(), {"model": {"net": {"embedding_dim": 8}}}).model.net.subspace_dim == 16


def test_the_search_offers_every_head():
    space = yaml.safe_load((ROOT / "configs/search/base.yaml").read_text())["space"]
    assert space["model.net.head"]["values"] == list(HEADS)
    assert HEADS == ("gap", "arcface", "adacos", "subcluster_adacos", "adaproj")
