"""Data sources -> `Dataset`: one registry keyed by a data SPEC string.

SPEC             what it reads                                            splits
---------------  -------------------------------------------------------  ----------------------
`fashion_mnist`  the four idx .gz files (`train-images-idx3-ubyte.gz`,    60k pool, 10k test
                 ...) from `data_dir`, `$KBN_DATA_DIR[/fashion-mnist]`,
                 /usr/share/datasets/fashion-mnist (Debian's
                 `dataset-fashion-mnist`), the Keras cache, else a
                 Keras download; the embedded default
`cifar10`        the official python batches (`cifar-10-batches-py/`      50k pool, 10k test
                 `data_batch_1..5`, `test_batch`) from `data_dir`,
                 `$KBN_DATA_DIR`, the Keras cache, else a Keras download
`folder:PATH`    one sub-folder of images per class (class = sorted       all of it is the pool;
                 sub-folder name), all of one size, RGB or gray;          no test
                 decoded once, then read from a cache
`npz:PATH`       arrays `x_train`, `y_train`, optional `x_test`,          as named
                 `y_test` and `class_names`

`load_pool(spec)` reads a source and checks it; `load_data(spec, ...)` shuffles the pool
with `seed` and cuts it into `train_size` training and `val_size` validation examples (the
protocol of the report, DD2424 assignment 3 on k-layer networks with batch normalization:
10,000 and 10,000), keeping the source's own test split or the whole
pool of `test_spec`. Images stay raw pixels (uint8 for image sources): the model owns its
preprocessing, so a saved model takes pixels exactly as a source yields them.

Bad input (a missing file, a corrupt image, labels that are not class indices) raises
`KbnError` with one line naming the source, what was received and what was expected.

>>> ds = load_data("fashion_mnist", train_size=10_000, val_size=10_000, seed=0)
>>> ds.train.x.shape, ds.val.x.shape, ds.test.x.shape, ds.num_classes
((10000, 28, 28, 1), (10000, 28, 28, 1), (10000, 28, 28, 1), 10)

Modules: `dataset` (Dataset, Split, load_data, load_pool: the registry, the shuffle and cut,
every check), one per source (`fashion_mnist`, `cifar10`, `folder`, `npz`: each reads its
files and nothing else), and `fetch` (the search path and Keras download that the two named
sources share).
"""

from kbn.data.dataset import Dataset, Split, load_data, load_pool

__all__ = ["Dataset", "Split", "load_data", "load_pool"]
