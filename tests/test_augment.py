import torch

from mimimi import augment


def batch(b=16, f=33, t=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.complex(torch.randn(b, 1, f, t, generator=g), torch.randn(b, 1, f, t, generator=g))


def gen(seed=1):
    return torch.Generator().manual_seed(seed)


def test_probability_zero_is_identity():
    x = batch()
    assert augment.spectral_mask(x, 0.0, 8, 4, gen()) is x
    assert augment.add_noise(x, 0.0, 10.0, gen()) is x
    assert augment.frequency_shift(x, 0.0, 3, gen()) is x
    y = torch.arange(16) % 4
    mixed, soft = augment.dirichlet_mixup(x, y, 4, 0.0, 1.0, 2, gen())
    assert mixed is x and torch.equal(soft, torch.nn.functional.one_hot(y, 4).float())


def test_spectral_mask_zeroes_bands_only():
    x = batch()
    out = augment.spectral_mask(x, 1.0, 8, 4, gen())
    zero = out == 0
    assert zero.any() and torch.equal(out[~zero], x[~zero])
    # each sample: the zeroed cells form full-height time bands and/or full-width frequency bands
    for i in range(len(x)):
        z = zero[i, 0]
        rows, cols = z.all(1), z.all(0)
        assert torch.equal(z, rows[:, None] | cols[None, :])
        assert rows.sum() <= 8 and cols.sum() <= 4


def test_noise_has_the_requested_snr():
    x = batch(b=64, f=129, t=64)
    out = augment.add_noise(x, 1.0, 10.0, gen())
    snr = 10 * torch.log10(x.abs().pow(2).mean() / (out - x).abs().pow(2).mean())
    assert abs(float(snr) - 10.0) < 0.3


def test_frequency_shift_moves_bins():
    x = batch(b=64)
    out = augment.frequency_shift(x, 1.0, 3, gen())
    shifted = 0
    for i in range(len(x)):
        matches = [s for s in range(-3, 4) if torch.equal(out[i, 0, max(s, 0):33 + min(s, 0)], x[i, 0, max(-s, 0):33 - max(s, 0)])]
        assert len(matches) == 1
        shifted += matches[0] != 0
    assert shifted > 32  # most samples actually moved


def test_dirichlet_mixup_targets_are_the_weights():
    x = batch(b=32)
    y = torch.arange(32) % 4
    mixed, soft = augment.dirichlet_mixup(x, y, 4, 1.0, 0.5, 2, gen())
    assert torch.allclose(soft.sum(1), torch.ones(32))
    assert (soft.max(1).values < 1).all()  # every sample mixed with a partner of another ID
    # mixed = w0 * own + w1 * partner: own weight is the soft target at the own class
    own = soft[torch.arange(32), y]
    resid = mixed - own[:, None, None, None] * x
    assert not torch.allclose(resid, torch.zeros_like(resid))
    again = augment.dirichlet_mixup(x, y, 4, 1.0, 0.5, 2, gen())
    assert torch.equal(again[0], mixed) and torch.equal(again[1], soft)  # seeded -> reproducible
