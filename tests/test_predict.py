"""Tests for kbn.inference.predict and `kbn predict`: image files and folders in, the model's
classes and softmax probabilities out, on a tiny net trained on synthetic images."""

import json

import numpy as np
import pytest
import synthetic
from PIL import Image

from kbn.cli import main
from kbn.errors import KbnError
from kbn.inference.predict import predict, softmax
from kbn.nn.builder import build_mlp

NUM_TRAIN = 200
NUM_CLASSES = 3
IMAGE_SHAPE = (4, 4, 3)
CLASS_NAMES = ("cat", "dog", "ship")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(model, its .keras path, 6 test images uint8 (6, 4, 4, 3), their PNG files)."""
    root = tmp_path_factory.mktemp("predict")
    x, y = synthetic.make_images(NUM_TRAIN, 0, NUM_CLASSES, IMAGE_SHAPE)
    model = build_mlp([8], NUM_CLASSES, adapt=x, seed=0, class_names=CLASS_NAMES)
    model.fit(x, y, epochs=3, batch_size=32, verbose=0)
    model.save(root / "m.keras")
    images, _ = synthetic.make_images(6, 1, NUM_CLASSES, IMAGE_SHAPE)
    files = []
    for i, image in enumerate(images):
        files.append(root / "images" / f"{i}.png")
        files[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(image).save(files[-1])
    return model, root / "m.keras", images, files


def expected_probabilities(model, images):
    return softmax(np.asarray(model.predict(images, verbose=0), np.float64))  # (N, K)


def test_top_class_and_probability_are_the_argmax_of_the_softmax(trained):
    model, _, images, files = trained
    probabilities = expected_probabilities(model, images)
    result = predict(model, files)
    assert [r["path"] for r in result] == [str(f) for f in files]
    best = np.argmax(probabilities, axis=1)
    assert len(set(best)) > 1  # a constant answer would hide a wrong mapping
    for r, p, k in zip(result, probabilities, best):
        assert r["resized"] is None
        assert len(r["top"]) == 1
        assert r["top"][0]["class"] == CLASS_NAMES[k] and r["top"][0]["index"] == k
        assert r["top"][0]["probability"] == pytest.approx(p[k], abs=1e-6)


def test_top_k_lists_every_class_from_the_most_probable_down(trained):
    model, _, images, files = trained
    probabilities = expected_probabilities(model, images)
    for r, p in zip(predict(model, files, top=NUM_CLASSES), probabilities):
        assert [t["index"] for t in r["top"]] == list(np.argsort(-p))
        assert [t["class"] for t in r["top"]] == [CLASS_NAMES[k] for k in np.argsort(-p)]
        assert sum(t["probability"] for t in r["top"]) == pytest.approx(1.0, abs=1e-9)


def test_a_folder_gives_its_images_recursively_in_sorted_order(trained, tmp_path):
    model, _, images, _ = trained
    for rel, i in (("b/2.png", 2), ("a.png", 0), ("b/1.png", 1), (".hidden/3.png", 3)):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(tmp_path / rel)
    (tmp_path / "notes.txt").write_text("not an image")
    result = predict(model, [tmp_path])
    assert [r["path"] for r in result] == [
        str(tmp_path / p) for p in ("a.png", "b/1.png", "b/2.png")
    ]
    best = np.argmax(expected_probabilities(model, images[:3]), axis=1)
    assert [r["top"][0]["index"] for r in result] == list(best)


def test_an_image_of_another_size_is_resized_and_says_so(trained, tmp_path):
    model, _, images, _ = trained
    big = np.kron(images[0], np.ones((2, 3, 1), np.uint8))  # (8, 12, 3)
    Image.fromarray(big).save(tmp_path / "big.png")
    [result] = predict(model, [tmp_path / "big.png"])
    assert result["resized"] == (8, 12)
    resized = np.asarray(Image.fromarray(big).resize((4, 4), Image.Resampling.BILINEAR))
    p = expected_probabilities(model, resized[None])[0]
    assert result["top"][0]["probability"] == pytest.approx(p.max(), abs=1e-6)


def test_a_gray_image_is_given_to_a_colour_model_in_all_three_channels(trained, tmp_path):
    model, _, images, _ = trained
    gray = images[0][:, :, 0]  # (4, 4)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    [result] = predict(model, [tmp_path / "gray.png"], top=NUM_CLASSES)
    p = expected_probabilities(model, np.repeat(gray[None, :, :, None], 3, axis=3))[0]
    assert [t["probability"] for t in result["top"]] == pytest.approx(
        sorted(p, reverse=True), abs=1e-6
    )


def test_a_jpeg_is_read_as_pil_decodes_it(trained, tmp_path):
    model, _, images, _ = trained
    Image.fromarray(images[1]).save(tmp_path / "photo.jpg", quality=95)
    decoded = np.asarray(Image.open(tmp_path / "photo.jpg").convert("RGB"))
    [result] = predict(model, [tmp_path / "photo.jpg"])
    p = expected_probabilities(model, decoded[None])[0]
    assert result["top"][0]["probability"] == pytest.approx(p.max(), abs=1e-6)


def test_a_corrupt_image_raises_kbn_error_naming_it(trained, tmp_path):
    model, _, _, files = trained
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG garbage, not an image" * 4)
    with pytest.raises(KbnError, match="cannot read image") as info:
        predict(model, [files[0], bad])
    assert str(bad) in str(info.value)


def test_a_missing_image_raises_kbn_error_naming_it(trained, tmp_path):
    model, _, _, _ = trained
    with pytest.raises(KbnError, match="does not exist") as info:
        predict(model, [tmp_path / "missing.png"])
    assert str(tmp_path / "missing.png") in str(info.value)


def test_a_folder_without_images_raises_kbn_error_naming_it(trained, tmp_path):
    model, _, _, _ = trained
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(KbnError, match="holds no images") as info:
        predict(model, [tmp_path])
    assert str(tmp_path) in str(info.value)


@pytest.mark.parametrize("top", [0, NUM_CLASSES + 1])
def test_top_beyond_the_models_classes_raises_kbn_error(top, trained):
    model, _, _, files = trained
    with pytest.raises(KbnError, match=f"from 1 to {NUM_CLASSES}"):
        predict(model, files, top=top)


def test_a_model_of_flat_inputs_raises_kbn_error(trained):
    _, _, _, files = trained
    flat = build_mlp([4], NUM_CLASSES, input_shape=(48,))
    with pytest.raises(KbnError, match=r"\(48,\)"):
        predict(flat, files)


# --- kbn predict ---------------------------------------------------------------------------


def test_cli_predict_json_gives_the_top_k_of_each_image(trained, capsys):
    model, path, images, files = trained
    status = main(["predict", str(path), str(files[0].parent), "--top", "2", "--json"])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    predictions = json.loads(captured.out.strip().splitlines()[-1])["predictions"]
    assert [p["path"] for p in predictions] == [str(f) for f in files]
    probabilities = expected_probabilities(model, images)
    for p, expected in zip(predictions, probabilities):
        assert [t["class"] for t in p["top"]] == [CLASS_NAMES[k] for k in np.argsort(-expected)[:2]]
        assert p["top"][0]["probability"] == pytest.approx(expected.max(), abs=1e-6)


def test_cli_predict_prints_one_line_per_image(trained, capsys):
    model, path, images, files = trained
    status = main(["predict", str(path), *map(str, files[:2])])
    captured = capsys.readouterr()
    assert status == 0, captured.err
    lines = captured.out.strip().splitlines()
    best = np.argmax(expected_probabilities(model, images[:2]), axis=1)
    assert [line.split(": ")[0] for line in lines] == [str(f) for f in files[:2]]
    assert [line.split(": ")[1].split()[0] for line in lines] == [CLASS_NAMES[k] for k in best]


def test_cli_predict_of_a_missing_image_is_one_error_line(trained, tmp_path, capsys):
    _, path, _, _ = trained
    status = main(["predict", str(path), str(tmp_path / "missing.png")])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1
    assert str(tmp_path / "missing.png") in captured.err
