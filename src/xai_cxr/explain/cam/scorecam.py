"""Score-CAM (Wang et al., 2020): each channel, upsampled and scaled to [0, 1], masks the input; the
channel's weight is the softmax over channels of the target-class probability of the masked input.

Gradient-free. Masked inputs are run in batches of ``mask_batch`` (one forward per channel per image). As in
pytorch-grad-cam, each activation map is upsampled first, then min-max scaled (the base class's
``upsample_maps`` and ``normalize_maps``)."""
import numpy as np

from ..targets import ClassProbability, predicted_class
from .base import BaseCAM, normalize_maps, upsample_maps


class ScoreCAM(BaseCAM):
    mask_batch = 64

    def compute(self, x, targets):
        import tensorflow as tf
        acts, scores = self._scores(x)
        acts = acts.numpy().astype(np.float64)
        targets = np.asarray(predicted_class(scores) if targets is None else targets)
        probability = ClassProbability()
        b, h, w, c = acts.shape
        out = np.zeros((b, h, w))
        images = x.numpy()
        for i in range(b):
            chans = np.moveaxis(acts[i], -1, 0)                                  # (C, h, w)
            masks = normalize_maps(upsample_maps(chans, images.shape[1:3], clip=False), warn=False)   # (C, H, W)
            probs = []
            for s in range(0, c, self.mask_batch):
                masked = images[i][None] * masks[s:s + self.mask_batch, ..., None]
                logits = self._scores(tf.constant(masked, tf.float32))[1]
                picked = probability(logits, np.full(len(masked), targets[i], np.int32), self._head_act or "softmax")
                probs.append(np.asarray(picked))
            weights = _softmax(np.concatenate(probs)[None])[0]                   # (C,)
            out[i] = np.maximum((weights[None, None, :] * acts[i]).sum(-1), 0)
        return out


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)
