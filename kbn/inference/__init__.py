"""What runs a trained model without training it: load, evaluate, predict, export.

evaluate.py  load_model; accuracy, loss, per-class accuracy and confusion per split
predict.py   classify image files
export.py    a TensorFlow SavedModel that needs neither kbn nor Keras
card.py      the model card: data, training, figures by split and class, limits
record.py    the training record a .keras file carries (kbn train --save writes it)
"""

from kbn.inference.evaluate import load_model

__all__ = ["load_model"]
