"""Ablation-CAM (Desai & Ramaswamy, WACV 2020; pytorch-grad-cam's ``AblationCAM``): a channel's weight is how much
the class score falls when that channel of the target layer is set to zero and the rest of the network runs on.
Gradient-free, so it sees a channel whose removal matters even where the score is saturated.

pytorch-grad-cam divides the fall by the unablated score; that is one constant per image, which the min-max
normalisation removes — except its sign when the score (a logit) is negative, which would invert the map, so the
plain fall ``y − y_k`` is used. The ablated forward runs only the layers after the target layer, ``ablation_batch``
channels at a time."""
import numpy as np

from ..targets import predicted_class
from .base import BaseCAM


class AblationCAM(BaseCAM):
    ablation_batch = 64

    def _tail(self):
        """layer output → the head's input (or the model output): the part of the network after the target layer."""
        import keras
        if getattr(self, "_tail_model", None) is None:
            layer = self.model.get_layer(self.target_layer)
            end = self._head.input if self._head is not None else self.model.outputs[0]
            self._tail_model = keras.Model(layer.output, end)
        return self._tail_model

    def compute(self, x, targets):
        import tensorflow as tf

        from ..targets import head_logits
        acts, scores = self._scores(x)
        acts = acts.numpy().astype(np.float32)
        targets = np.asarray(predicted_class(scores) if targets is None else targets)
        tail = self._tail()

        def score(a, t):
            out = tail(tf.constant(a), training=False)
            logits = out if self._head is None else head_logits(self._head, out)
            return np.asarray(self.target(logits, tf.constant(t, tf.int32), self._head_act), np.float64)

        b, h, w, c = acts.shape
        out = np.zeros((b, h, w))
        for i in range(b):
            y = score(acts[i:i + 1], targets[i:i + 1])[0]
            falls = []
            for s in range(0, c, self.ablation_batch):
                ks = np.arange(s, min(c, s + self.ablation_batch))
                batch = np.repeat(acts[i:i + 1], len(ks), axis=0)
                batch[np.arange(len(ks)), :, :, ks] = 0.0                  # one channel zeroed per row
                falls.append(y - score(batch, np.full(len(ks), targets[i])))
            weights = np.concatenate(falls)                                 # (C,)
            out[i] = np.maximum((acts[i].astype(np.float64) * weights).sum(-1), 0)
        return out
