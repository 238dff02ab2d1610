"""The one registry of explainers: name → ``ExplainerSpec``. The CLI's choices, the audit, the planted-shortcut
audit, the app, the API, the report and the notebook all read it, so a new explainer is one class (a ``BaseCAM``
subclass overriding ``weights``, or an attribution) plus one entry here.

Every entry builds the same way, ``spec.build(model, layers, batch_size)``, and every explainer is called as
``explainer(images, targets) -> maps (B, H, W) in [0, 1]``. ``layers`` is always a tuple of layer names: one layer
for a CAM, several to fuse their maps (the ``fused`` method, and any CAM on a stacked ensemble); input attributions
ignore it. Which layers an entry reads is its ``reads``: "target", "fusion" or "input".
"""
from __future__ import annotations

from dataclasses import dataclass

from .attribution import BlurIntegratedGradients, IntegratedGradients, LimeSuperpixels, ShapPartition, SmoothGrad
from .cam import (
    AblationCAM,
    ContrastiveGradCAM,
    EigenCAM,
    FusedCAM,
    GradCAM,
    GradCAMPlusPlus,
    HiResCAM,
    LayerCAM,
    ScoreCAM,
)
from .perturbation import RISE, BlurOcclusion, Occlusion
from .targets import ClassLogit, ClassProbability, ContrastiveLogit


@dataclass(frozen=True, kw_only=True)
class ExplainerSpec:
    cls: type                # the explainer class: a BaseCAM subclass, FusedCAM, or an input attribution
    uses_gradients: bool     # False: forward passes only (no tape)
    cost: str                # "fast" (tens of ms per map on a CPU) | "slow" (seconds per map)
    explains: str            # the score a map explains
    reads: str = "target"    # which layers it reads: "target" (the backbone's CAM layer), "fusion", "input"
    audited_by_default: bool = True   # in `xai-cxr audit` when no --methods are given
    packages: tuple[str, ...] = ()    # optional packages it imports (the `app` extra), checked by `missing_packages`

    def build(self, model, layers: tuple[str, ...] = (), batch_size: int | None = None):
        """The explainer on ``model``; ``layers`` as ``layers_for`` gives them; ``batch_size`` None = the class's."""
        kw = {} if batch_size is None else {"batch_size": batch_size}
        if self.reads == "input":
            return self.cls(model, **kw)
        if self.reads == "fusion":
            return FusedCAM(model, layers, GradCAM, **kw)
        if len(layers) > 1:                  # several layers (an ensemble's members): their maps, fused
            return FusedCAM(model, layers, self.cls, **kw)
        return self.cls(model, layers[0], **kw)


LOGIT, PROBABILITY = ClassLogit.description, ClassProbability.description      # what is explained (targets.py)
CONTRAST = ContrastiveLogit.description
EXPLAINERS: dict[str, ExplainerSpec] = {
    "gradcam": ExplainerSpec(cls=GradCAM, uses_gradients=True, cost="fast", explains=LOGIT),
    "gradcam++": ExplainerSpec(cls=GradCAMPlusPlus, uses_gradients=True, cost="fast", explains=LOGIT),
    "hirescam": ExplainerSpec(cls=HiResCAM, uses_gradients=True, cost="fast", explains=LOGIT),
    "layercam": ExplainerSpec(cls=LayerCAM, uses_gradients=True, cost="fast", explains=LOGIT),
    "scorecam": ExplainerSpec(cls=ScoreCAM, uses_gradients=False, cost="slow", explains=PROBABILITY),
    "eigencam": ExplainerSpec(cls=EigenCAM, uses_gradients=False, cost="fast",
                              explains="none: the activations' first principal component"),
    "fused": ExplainerSpec(cls=FusedCAM, uses_gradients=True, cost="fast", explains=LOGIT, reads="fusion"),
    "ablationcam": ExplainerSpec(cls=AblationCAM, uses_gradients=False, cost="slow", explains=LOGIT,
                                 audited_by_default=False),
    "contrastive": ExplainerSpec(cls=ContrastiveGradCAM, uses_gradients=True, cost="fast", explains=CONTRAST),
    "integrated_gradients": ExplainerSpec(cls=IntegratedGradients, uses_gradients=True, cost="slow", explains=LOGIT,
                                          reads="input", audited_by_default=False),
    "integrated_gradients_blur": ExplainerSpec(cls=BlurIntegratedGradients, uses_gradients=True, cost="slow",
                                               explains=LOGIT, reads="input", audited_by_default=False),
    "smoothgrad": ExplainerSpec(cls=SmoothGrad, uses_gradients=True, cost="slow", explains=LOGIT, reads="input",
                                audited_by_default=False),
    "lime": ExplainerSpec(cls=LimeSuperpixels, uses_gradients=False, cost="slow", explains=PROBABILITY, reads="input",
                          audited_by_default=False, packages=("lime", "skimage")),
    "shap": ExplainerSpec(cls=ShapPartition, uses_gradients=False, cost="slow", explains=PROBABILITY, reads="input",
                          audited_by_default=False, packages=("shap",)),
    "occlusion": ExplainerSpec(cls=Occlusion, uses_gradients=False, cost="slow", explains=PROBABILITY, reads="input",
                               audited_by_default=False),
    "occlusion_blur": ExplainerSpec(cls=BlurOcclusion, uses_gradients=False, cost="slow", explains=PROBABILITY,
                                    reads="input", audited_by_default=False),
    "rise": ExplainerSpec(cls=RISE, uses_gradients=False, cost="slow", explains=PROBABILITY, reads="input",
                          audited_by_default=False),
}


def cam_classes() -> dict[str, type]:
    """The single-layer CAM methods: name → BaseCAM subclass."""
    return {n: s.cls for n, s in EXPLAINERS.items() if s.reads == "target"}


def explainer_names(fast_only: bool = False, audited_by_default: bool = False) -> list[str]:
    return [n for n, s in EXPLAINERS.items()
            if (not fast_only or s.cost == "fast") and (not audited_by_default or s.audited_by_default)]


def get_spec(name: str) -> ExplainerSpec:
    if name not in EXPLAINERS:
        raise ValueError(f"unknown explanation method {name!r}; choose from {list(EXPLAINERS)}")
    return EXPLAINERS[name]


def layers_for(name: str, backbone: str, target_layer: str | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The layers ``name`` reads on a ``backbone`` model: the given target layer (a saved model card may store
    several as "a+b"), else the backbone's CAM layer(s), or its fusion layers for "fused"."""
    from ..models import BACKBONES
    spec, bb = get_spec(name), BACKBONES[backbone]
    if spec.reads == "input":
        return ()
    if spec.reads == "fusion":
        return tuple(bb.fusion_layers)
    layer = target_layer or bb.target_layer
    return tuple(layer.split("+")) if isinstance(layer, str) else tuple(layer)


def missing_packages(name: str) -> list[str]:
    """The optional packages explainer ``name`` needs that are not installed (empty when it can run)."""
    import importlib.util
    return [p for p in get_spec(name).packages if importlib.util.find_spec(p) is None]


def make_explainer(name: str, model, backbone: str, target_layer=None, batch_size: int | None = None):
    """The explainer ``name`` for ``model`` (built on ``backbone``), on ``target_layer`` or the backbone's default;
    ``batch_size`` None = the method's own default."""
    return get_spec(name).build(model, layers_for(name, backbone, target_layer), batch_size)
