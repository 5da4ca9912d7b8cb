"""Training-time augmentations of complex STFT segment batches, and Dirichlet mixup across IDs.

All act on a batch ``x`` of shape (B, 1, F, T), complex, and take a ``torch.Generator`` so a
seeded run is reproducible. Each is applied per sample with its probability.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _chosen(n: int, p: float, g: torch.Generator, device: torch.device) -> torch.Tensor:
    return (torch.rand(n, generator=g) < p).to(device)


def spectral_mask(x: torch.Tensor, p: float, max_bins: int, max_frames: int, g: torch.Generator) -> torch.Tensor:
    """SpecAugment-style: zero one random band of up to ``max_bins`` bins and one of up to ``max_frames`` frames."""
    b, _, nf, nt = x.shape
    chosen = _chosen(b, p, g, x.device)
    if p <= 0 or not chosen.any():
        return x
    fw = torch.randint(0, max_bins + 1, (b,), generator=g)
    f0 = (torch.rand(b, generator=g) * (nf - fw + 1)).long()
    tw = torch.randint(0, max_frames + 1, (b,), generator=g)
    t0 = (torch.rand(b, generator=g) * (nt - tw + 1)).long()
    fi, ti = torch.arange(nf), torch.arange(nt)
    fmask = (fi[None] >= f0[:, None]) & (fi[None] < (f0 + fw)[:, None])  # (B, F)
    tmask = (ti[None] >= t0[:, None]) & (ti[None] < (t0 + tw)[:, None])  # (B, T)
    mask = (fmask[:, :, None] | tmask[:, None, :]).to(x.device) & chosen[:, None, None]
    return x.masked_fill(mask[:, None], 0)


def add_noise(x: torch.Tensor, p: float, snr_db: float, g: torch.Generator) -> torch.Tensor:
    """Add circular complex Gaussian noise at ``snr_db`` below each chosen segment's power."""
    b = x.shape[0]
    chosen = _chosen(b, p, g, x.device)
    if p <= 0 or not chosen.any():
        return x
    pick = chosen.nonzero().flatten()  # (c,): noise is drawn for the chosen segments only (a quarter by default)
    sub = x[pick]  # (c, 1, F, T)
    power = sub.abs().pow(2).mean(dim=(1, 2, 3), keepdim=True)  # (c, 1, 1, 1)
    scale = torch.sqrt(power * 10 ** (-snr_db / 10) / 2)
    real_dtype = x.real.dtype
    noise = torch.complex(torch.randn(sub.shape, generator=g, dtype=real_dtype),
                          torch.randn(sub.shape, generator=g, dtype=real_dtype)).to(x.device)
    out = x.clone()
    out[pick] = sub + noise * scale
    return out


def frequency_shift(x: torch.Tensor, p: float, max_bins: int, g: torch.Generator) -> torch.Tensor:
    """Shift each chosen segment up or down by up to ``max_bins`` frequency bins, zero-filling the edge."""
    b, _, nf, _ = x.shape
    chosen = _chosen(b, p, g, x.device)
    if p <= 0 or max_bins <= 0 or not chosen.any():
        return x
    shifts = torch.randint(-max_bins, max_bins + 1, (b,), generator=g) * chosen.cpu()
    src = torch.arange(nf)[None] - shifts[:, None]  # (B, F): output bin f takes input bin f - shift
    valid = ((src >= 0) & (src < nf)).to(x.device)
    idx = src.clamp(0, nf - 1).to(x.device)[:, None, :, None].expand_as(x)
    return torch.gather(x, 2, idx) * valid[:, None, :, None]


def dirichlet_mixup(x: torch.Tensor, y: torch.Tensor, n_classes: int, p: float, alpha: float, k: int,
                    g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each chosen sample with ``k - 1`` partners of other IDs, weights w ~ Dir(alpha); target = w.

    Returns the mixed batch and soft targets (B, n_classes); unchosen samples keep one-hot targets.
    Partners are drawn from the batch among samples of a different ID where the batch has one.
    """
    b = x.shape[0]
    target = F.one_hot(y, n_classes).to(x.real.dtype)
    chosen = _chosen(b, p, g, x.device)
    if p <= 0 or k < 2 or b < 2 or not chosen.any():
        return x, target
    w = _dirichlet(b, k, alpha, g).to(x.device)  # (B, k)
    yc = y.cpu()
    partners = [torch.arange(b)]
    for _ in range(k - 1):
        idx = torch.randint(0, b, (b,), generator=g)
        for _retry in range(4):  # prefer a partner of another ID
            same = yc[idx] == yc
            if not same.any():
                break
            idx[same] = torch.randint(0, b, (int(same.sum()),), generator=g)
        partners.append(idx)
    idx = torch.stack(partners, 1).to(x.device)  # (B, k)
    w = torch.where(chosen[:, None], w, F.one_hot(torch.zeros(b, dtype=torch.long, device=x.device), k).to(w.dtype))
    mixed = (x[idx] * w[:, :, None, None, None].to(x.real.dtype)).sum(1)
    soft = (target[idx] * w[:, :, None].to(target.dtype)).sum(1)
    return mixed, soft


def _dirichlet(b: int, k: int, alpha: float, g: torch.Generator) -> torch.Tensor:
    """(b, k) rows ~ Dir(alpha), reproducible from ``g`` (torch.distributions only uses the global RNG)."""
    seed = int(torch.randint(0, 2**62, (1,), generator=g))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.distributions.Dirichlet(torch.full((k,), float(alpha))).sample((b,))
