"""What an explanation explains, shared by CAMs and input attributions (pytorch-grad-cam's ``model_targets``).

A classifier is read as body → head: when it ends in a Dense layer with a softmax or sigmoid, the scores
explained are that layer's *logits* (before the activation, so a saturated softmax still has gradients);
otherwise the model's output itself. A ``Target`` turns the (B, K) logits and one class index per image into
the (B,) score whose gradient or change is explained:

- ``ClassLogit`` (default): the class's logit; for a multi-label (sigmoid) model, the logit of one finding.
- ``ClassProbability``: the class's probability after the head's softmax/sigmoid (what LIME and SHAP explain).
- ``ContrastiveLogit``: the class's logit minus the mean logit of the other classes (evidence for it *against*
  the others).

``predicted_class`` is the one place where "no target given → the predicted class" is decided.
"""
from __future__ import annotations

import numpy as np


def output_head(model):
    """(layer, activation name) when ``model`` ends in a Dense + softmax/sigmoid, else (None, None)."""
    import keras
    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense):
        act = getattr(last.activation, "__name__", "")
        if act in ("softmax", "sigmoid"):
            return last, act
    return None, None


def head_logits(head, features):
    """The head's logits from its input ``features`` (computed in the features' dtype under mixed precision,
    returned as float32)."""
    import tensorflow as tf
    kernel = tf.cast(head.kernel, features.dtype)
    return tf.cast(tf.matmul(features, kernel) + tf.cast(head.bias, features.dtype), tf.float32)


def predicted_class(scores):
    """The default target of every explainer: the most probable class, (B,) int32. The argmax of the logits
    equals the argmax of the softmax (and of per-label sigmoids), so logits or probabilities both work."""
    import tensorflow as tf
    return tf.argmax(scores, axis=-1, output_type=tf.int32)


def as_targets(targets, n: int) -> np.ndarray | None:
    """``targets`` (None, one int, or (n,) ints) as an (n,) int32 array; None stays None."""
    if targets is None:
        return None
    return np.broadcast_to(np.asarray(targets, np.int32), (n,)).copy()


class ClassLogit:
    """Score = the logit of the target class (label, for multi-label models)."""
    description = "class logit (before softmax/sigmoid)"

    def __call__(self, logits, targets, activation: str | None = None):
        import tensorflow as tf
        return tf.gather(logits, targets, axis=1, batch_dims=1)


class ClassProbability:
    """Score = the probability of the target class: softmax over classes, or the label's own sigmoid."""
    description = "class probability"

    def __call__(self, logits, targets, activation: str | None = "softmax"):
        import tensorflow as tf
        proba = tf.sigmoid(logits) if activation == "sigmoid" else \
            tf.nn.softmax(logits) if activation == "softmax" else logits
        return tf.gather(proba, targets, axis=1, batch_dims=1)


class ContrastiveLogit:
    """Score = the target's logit minus the mean of the other classes' logits (two classes: z_t − z_other)."""
    description = "class logit minus the other classes' mean logit"

    def __call__(self, logits, targets, activation: str | None = None):
        import tensorflow as tf
        k = tf.cast(tf.shape(logits)[1], logits.dtype)
        picked = tf.gather(logits, targets, axis=1, batch_dims=1)
        others = (tf.reduce_sum(logits, axis=1) - picked) / tf.maximum(k - 1, 1)
        return picked - others
