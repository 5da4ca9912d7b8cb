import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from mimimi.config import FeatureConfig
from mimimi.data.dataset import LABEL_CODES, ClipSegments, TrainSegments, id_map
from mimimi.data.index import index_dataset, select
from mimimi.features import FeatureCache


@pytest.fixture(scope="module")
def setup(noise_tree, tmp_path_factory):
    clips = index_dataset(noise_tree).clips
    cache = FeatureCache(tmp_path_factory.mktemp("cache"), FeatureConfig())
    cache.warm(clips.path, progress=False)
    return clips, cache, id_map(clips)


def test_train_segments(setup):
    clips, cache, ids = setup
    train = select(clips, split="train")
    ds = TrainSegments(train, cache, ids, segments_per_clip=3, seed=1)
    assert len(ds) == 3 * len(train) and ids == {"00": 0, "02": 1}
    x, y = ds[0]
    assert x.shape == (1, 513, 64) and x.dtype == torch.complex64 and y == 0
    assert ds[len(ds) - 1][1] == 1
    # the segment is a real window of the cached clip
    full = np.asarray(cache.get(train.path[0]))
    starts = [s for s in range(full.shape[1] - 63) if np.array_equal(full[:, s:s + 64], x[0].numpy())]
    assert len(starts) == 1


def test_train_segments_are_reproducible_and_change_per_epoch(setup):
    clips, cache, ids = setup
    train = select(clips, split="train")
    a, b = TrainSegments(train, cache, ids, seed=1), TrainSegments(train, cache, ids, seed=1)
    assert all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))
    b.set_epoch(1)
    assert not all(torch.equal(a[i][0], b[i][0]) for i in range(len(a)))


def test_loader_with_workers_batches_complex_segments(setup):
    clips, cache, ids = setup
    loader = DataLoader(TrainSegments(select(clips, split="train"), cache, ids), batch_size=4, num_workers=2)
    xs, ys = zip(*loader)
    assert torch.cat(xs).shape == (6, 1, 513, 64) and torch.cat(ys).tolist() == [0, 0, 0, 1, 1, 1]


def test_clip_segments_carry_labels(setup):
    clips, cache, ids = setup
    test = select(clips, split="test")
    items = list(ClipSegments(test, cache, ids))
    assert [it.label for it in items] == test.label.map(LABEL_CODES).tolist()
    assert {it.label for it in items} == {0, 1}
    assert all(it.x.shape == (2, 1, 513, 64) for it in items)


def test_unknown_machine_id_is_an_error(setup):
    clips, cache, _ = setup
    with pytest.raises(ValueError, match=r"machine ID\(s\) \['02'\] are not among the model's IDs \['00'\]"):
        ClipSegments(clips, cache, {"00": 0})
