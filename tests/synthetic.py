"""Tiny learnable image data shared by the tests: class = brightest quadrant."""

import numpy as np

LABEL_NOISE = 0.1  # keeps accuracies below 1.0, so that a wrong count would show


def make_images(n, seed, num_classes=3, shape=(4, 4, 1), label_noise=LABEL_NOISE):
    """uint8 images of `shape` whose class is the brightest quadrant.

    Args:
        n: number of images.
        seed: int.
        num_classes: up to 4 quadrants; labels beyond reuse them modulo 4.
        shape: (H, W, C) of one image.
        label_noise: fraction of labels replaced by random ones.

    Returns:
        x: uint8 array of shape (n, *shape).
        y: int array of shape (n,).
    """
    rng = np.random.default_rng(seed)
    height, width = shape[0] // 2, shape[1] // 2
    corners = [(0, 0), (0, width), (height, 0), (height, width)]
    x = rng.integers(0, 100, (n,) + shape).astype(np.uint8)
    y = rng.integers(0, num_classes, n)
    for image, label in zip(x, y):
        row, col = corners[label % 4]
        image[row : row + height, col : col + width] += 120
    noisy = rng.random(n) < label_noise
    y[noisy] = rng.integers(0, num_classes, int(noisy.sum()))
    return x, y
