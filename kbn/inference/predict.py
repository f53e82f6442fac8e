"""Classify image files with a saved kbn model: the top classes and their probabilities.

    image files (JPEG, PNG, ...) -> uint8 (N, H, W, C) at the model's size
      -> model -> logits (N, K) -> softmax -> the `top` most probable classes

Each file is decoded as the folder data source decodes its images
(`kbn.data.folder.read_image`), so a model trained on a `folder:` source sees
the pixels it was trained on. An image of another size is resized to the
model's (bilinear) and its result says so; colour images become gray for a
gray model (ITU-R 601 luma) and gray images RGB for a colour one.
"""

import os
import pathlib
from collections.abc import Iterable
from typing import Any

import keras
import numpy as np

from kbn.data import folder
from kbn.errors import KbnError
from kbn.nn.builder import class_names as model_class_names


def predict(
    model: keras.Model,
    paths: str | os.PathLike | Iterable[str | os.PathLike],
    top: int = 1,
    batch_size: int = 256,
) -> list[dict[str, Any]]:
    """The `top` most probable classes of each image, with their probabilities.

    Args:
        model: a kbn classifier (`build_mlp` or `kbn.inference.evaluate.load_model`)
            whose inputs are images of shape (H, W, C), C 1 or 3, and whose
            outputs are logits of shape (N, K).
        paths: image files and folders (str or path-like); a folder stands
            for every image under it, recursively, in sorted order, hidden
            files skipped.
        top: how many classes to give per image, 1 <= top <= K.
        batch_size: images per prediction step.

    Returns:
        list, one dict per image in the order of `paths`: `path` (str),
        `resized` (the file's (height, width) when it was resized to the
        model's, else None), and `top`: a list of `top` dicts {`class`
        (name), `index`, `probability`} from the most probable down.
        Probabilities are the softmax of the logits, in float64.

    Raises:
        KbnError: a path is missing, unreadable or not an image, a folder
            holds no image, `top` is out of range, or the model does not
            take images.
    """
    shape = tuple(model.input_shape[1:])
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise KbnError(
            f"predict needs a model of images (H, W, C) with C 1 or 3; "
            f"this model takes inputs of shape {shape}"
        )
    names = model_class_names(model)
    if (
        isinstance(top, bool)
        or not isinstance(top, (int, np.integer))
        or not 1 <= top <= len(names)
    ):
        raise KbnError(
            f"top must be an integer from 1 to {len(names)} (the model's classes). "
            f"Received: top={top!r}"
        )
    files = image_files(paths)
    images, resized = zip(*(read_image(path, shape) for path in files))
    logits = np.asarray(
        model.predict(np.stack(images), batch_size=batch_size, verbose=0), np.float64
    )  # (N, K)
    probabilities = softmax(logits)  # (N, K)
    best = np.argsort(-probabilities, axis=1, kind="stable")[:, :top]  # (N, top)
    return [
        {
            "path": str(path),
            "resized": size,
            "top": [
                {"class": names[k], "index": int(k), "probability": float(p[k])} for k in order
            ],
        }
        for path, size, p, order in zip(files, resized, probabilities, best)
    ]


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax of logits (N, K), shifted by the row maximum so it never overflows."""
    shifted = logits - logits.max(axis=1, keepdims=True)  # (N, K)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def image_files(
    paths: str | os.PathLike | Iterable[str | os.PathLike],
) -> list[pathlib.Path]:
    """The image files that `paths` name: files as given, folders expanded, sorted.

    Args:
        paths: files and folders (str or path-like), at least one.

    Returns:
        list of `pathlib.Path`.

    Raises:
        KbnError: no path, a missing path, or a folder without images.
    """
    roots = [pathlib.Path(p) for p in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not roots:
        raise KbnError("predict needs at least one image file or folder. Received none")
    files = []
    for path in roots:
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in folder.IMAGE_EXTENSIONS
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise KbnError(
                    f"folder {path} holds no images: expected files ending in "
                    f"{', '.join(sorted(folder.IMAGE_EXTENSIONS))}"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise KbnError(f"image {path} does not exist")
    return files


def read_image(
    path: str | os.PathLike, shape: tuple[int, int, int]
) -> tuple[np.ndarray, tuple[int, int] | None]:
    """One image file as uint8 of `shape` (H, W, C), and its own size if it was resized.

    Args:
        path: an image file.
        shape: (H, W, C) of the model's inputs, C 1 (gray) or 3 (RGB).

    Returns:
        (image, resized): image uint8 of shape (H, W, C); resized the file's
        (height, width) when it differed from (H, W), else None.

    Raises:
        KbnError: the file cannot be read as an image.
    """
    height, width, channels = shape
    image = folder.read_image(path, channels=channels)  # (h, w, C), the file's own size
    if image.shape[:2] == (height, width):
        return image, None
    # Decoded again at the model's size: one resize of the file's own pixels, the
    # folder source's way (another size is the exception, so the second read is rare).
    return folder.read_image(path, size=(height, width), channels=channels), image.shape[:2]
