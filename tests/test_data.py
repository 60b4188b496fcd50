import numpy as np
import pytest

from distnn.config import make_config
from distnn.data import BatchSampler, load_dataset, worker_range
from distnn.data.sampler import sub_batch, take
from distnn.data.spiral import spiral_data
from distnn.errors import UsageError


def spiral_formula(samples, classes, seed):
    """CS231n's spiral written out independently: arm c spans angle 4c..4(c+1), radius 0..1."""
    rng = np.random.RandomState(seed)
    xs, ys = [], []
    for c in range(classes):
        r = np.linspace(0, 1, samples)
        t = np.linspace(4 * c, 4 * (c + 1), samples) + 0.2 * rng.randn(samples)
        xs.append(np.stack([r * np.sin(2.5 * t), r * np.cos(2.5 * t)], axis=1))
        ys.append(np.full(samples, c))
    return np.concatenate(xs), np.concatenate(ys)


@pytest.mark.parametrize("samples, classes", [(100, 3), (37, 10)])
def test_spiral_equals_the_formula(samples, classes):
    x, y = spiral_data(samples, classes, np.random.RandomState(5))
    ref_x, ref_y = spiral_formula(samples, classes, 5)
    assert x.dtype == np.float64 and y.dtype == np.uint8
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y, ref_y)


def test_spiral_uses_the_global_state_like_nnfs():
    np.random.seed(0)
    x, _ = spiral_data(50, 3)
    np.testing.assert_array_equal(x, spiral_formula(50, 3, 0)[0])


def test_spiral_equals_nnfs_when_installed():
    nnfs_spiral = pytest.importorskip("nnfs.datasets").spiral_data
    np.random.seed(0)
    ref_x, ref_y = nnfs_spiral(100, 3)
    x, y = spiral_data(100, 3, np.random.RandomState(0))
    np.testing.assert_array_equal(x, ref_x)
    np.testing.assert_array_equal(y, ref_y)


def test_spiral_test_set_differs_from_training_set():
    data = load_dataset(make_config(samples_per_class=50).data)
    assert data.x_train.shape == data.x_test.shape == (150, 2)
    assert not np.array_equal(data.x_train, data.x_test)


@pytest.mark.parametrize("n, parts", [(10, 3), (3, 4), (128, 2), (7, 7)])
def test_worker_ranges_are_contiguous_and_as_even_as_possible(n, parts):
    ranges = [worker_range(n, parts, i) for i in range(parts)]
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    sizes = [stop - start for start, stop in ranges]
    assert max(sizes) - min(sizes) <= 1
    assert [len(part) for part in np.array_split(np.arange(n), parts)] == sizes


def test_sampler_order_depends_only_on_seed_and_epoch():
    a = BatchSampler(100, 32, seed=7)
    b = BatchSampler(100, 32, seed=7)
    for epoch in range(3):
        batches_a, batches_b = list(a.batches(epoch)), list(b.batches(epoch))
        assert [len(x) for x in batches_a] == [32, 32, 32, 4]
        for x, y in zip(batches_a, batches_b):
            np.testing.assert_array_equal(x, y)
        assert sorted(np.concatenate(batches_a)) == list(range(100))
    assert not np.array_equal(next(a.batches(0)), next(a.batches(1)))
    assert not np.array_equal(next(a.batches(0)), next(BatchSampler(100, 32, seed=8).batches(0)))


@pytest.mark.parametrize("n, batch, shards", [(100, 32, 2), (8, 4, 3), (300, 37, 3), (11, 6, 3),
                                               (50, None, 4)])
@pytest.mark.parametrize("shuffle", [True, False])
def test_each_worker_reads_only_its_shard(n, batch, shards, shuffle):
    sampler = BatchSampler(n, batch, seed=3, shuffle=shuffle, shards=shards)
    ranges = sampler.shard_ranges()
    assert ranges[0][0] == 0 and ranges[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    for epoch in range(2):
        batches = list(sampler.batches(epoch))
        assert [len(b) for b in batches] == sampler.batch_lengths()
        assert sorted(np.concatenate(batches).tolist()) == list(range(n))
        for b in batches:
            for worker, (low, high) in enumerate(ranges):
                start, stop = worker_range(len(b), shards, worker)
                assert all(low <= row < high for row in b[start:stop])
    if shuffle:
        assert not np.array_equal(next(sampler.batches(0)), next(sampler.batches(1)))


def test_one_shard_keeps_the_global_shuffle():
    one = BatchSampler(100, 32, seed=7, shards=1)
    np.testing.assert_array_equal(np.concatenate(list(one.batches(2))),
                                  np.random.default_rng((7, 2)).permutation(100))


def test_unshuffled_batches_are_slices_and_take_copies_nothing():
    sampler = BatchSampler(10, 4, seed=0, shuffle=False)
    batches = list(sampler.batches(0))
    assert batches == [slice(0, 4), slice(4, 8), slice(8, 10)]
    x = np.arange(20.0).reshape(10, 2)
    part = take(x, sub_batch(batches[1], 1, 3))
    assert np.shares_memory(part, x)
    np.testing.assert_array_equal(part, x[5:7])


@pytest.mark.parametrize("shards", [1, 3])
def test_a_rank_that_reads_no_samples_gets_the_lengths_without_a_shuffle(monkeypatch, shards):
    sampler = BatchSampler(100, 32, seed=7, shards=shards)
    lengths = [len(batch) for batch in sampler.batches(1)]
    monkeypatch.setattr(BatchSampler, "epoch_order", lambda self, epoch: pytest.fail("shuffled"))
    slices = list(sampler.batches(1, indices=False))
    assert [s.stop - s.start for s in slices] == lengths == sampler.batch_lengths()


def _write(path, text):
    path.write_text(text)
    return path


def test_csv_directory_with_header_and_held_out_split(tmp_path):
    _write(tmp_path / "X_train.csv", "a,b\n" + "\n".join(f"{i},{-i}" for i in range(10)) + "\n")
    _write(tmp_path / "y_train.csv", "\n".join(str(i % 2) for i in range(10)) + "\n")
    data = load_dataset(make_config(dataset=str(tmp_path), test_fraction=0.2).data)
    assert data.x_train.shape == (8, 2) and data.x_test.shape == (2, 2)
    assert data.n_classes == 2 and data.x_train.dtype == np.float32


def test_npz_with_explicit_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", X_train=rng.normal(size=(20, 3)), y_train=np.arange(20) % 4,
             X_test=rng.normal(size=(5, 3)), y_test=np.arange(5) % 4)
    data = load_dataset(make_config(dataset=str(tmp_path / "d.npz"), dtype="float64").data)
    assert (data.n_features, data.n_classes, data.x_test.shape[0]) == (3, 4, 5)


BAD_FILES = {
    "ragged": ("1,2\n3\n", "0\n1\n", "data row 2 has 1 columns, the first has 2"),
    "text": ("1,2\n3,x\n", "0\n1\n", "data row 2 is not numeric"),
    "nan": ("1,2\nnan,4\n", "0\n1\n", "X_train holds NaN or infinite values"),
    "fraction": ("1,2\n3,4\n", "0\n1.5\n", "y_train holds non-integer labels"),
    "negative": ("1,2\n3,4\n", "0\n-1\n", "y_train holds a negative label (-1)"),
    "mismatch": ("1,2\n3,4\n5,6\n", "0\n1\n", "X_train has 3 rows but y_train has 2"),
    "empty": ("", "0\n", "X_train.csv holds no data rows"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_csv_files_are_named_with_the_problem(tmp_path, case):
    x_text, y_text, message = BAD_FILES[case]
    _write(tmp_path / "X_train.csv", x_text)
    _write(tmp_path / "y_train.csv", y_text)
    _write(tmp_path / "X_test.csv", "1,2\n")
    _write(tmp_path / "y_test.csv", "1\n")
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset(make_config(dataset=str(tmp_path)).data)


def test_missing_dataset_path_says_what_is_expected(tmp_path):
    with pytest.raises(UsageError, match="no such file or directory"):
        load_dataset(make_config(dataset=str(tmp_path / "nope")).data)


def test_npz_without_labels_is_rejected(tmp_path):
    np.savez(tmp_path / "d.npz", X_train=np.zeros((4, 2)))
    with pytest.raises(UsageError, match="missing y_train"):
        load_dataset(make_config(dataset=str(tmp_path / "d.npz")).data)


def test_one_csv_with_a_named_label_column_and_a_random_held_out_split(tmp_path):
    rows = "\n".join(f"{i},{i % 3},{-i}" for i in range(30))
    (tmp_path / "d.csv").write_text("f1,label,f2\n" + rows + "\n")
    data = load_dataset(make_config(dataset=str(tmp_path / "d.csv"), label_column="label",
                                    test_fraction=0.3, dtype="float64").data)
    assert data.x_train.shape == (21, 2) and data.x_test.shape == (9, 2)
    assert data.n_classes == 3 and len(set(data.y_test.tolist())) > 1
    np.testing.assert_array_equal(data.x_train[:, 0] % 3, data.y_train)
    np.testing.assert_array_equal(data.x_train[:, 1], -data.x_train[:, 0])


@pytest.mark.parametrize("column, message", [
    ("9", "--label-column 9: "),
    ("name", "--label-column 'name' is not a column of"),
])
def test_bad_label_column_is_named(tmp_path, column, message):
    (tmp_path / "d.csv").write_text("1,2,0\n3,4,1\n")
    with pytest.raises(UsageError, match=message):
        load_dataset(make_config(dataset=str(tmp_path / "d.csv"), label_column=column).data)
