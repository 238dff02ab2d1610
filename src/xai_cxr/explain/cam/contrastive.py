"""Class-contrastive Grad-CAM: Grad-CAM of the target logit *minus* the mean logit of the other classes (for two
classes, z_target − z_other). Where evidence for the target and evidence against the other class differ — a
black wedge that lowers the NORMAL logit more than it raises the PNEUMONIA one — the contrastive map shows the
difference, which a map of the target logit alone does not (Prabhushankar et al., ICIP 2020, "contrastive
explanations"; pytorch-grad-cam's ``ClassifierOutputTarget`` difference targets)."""
from ..targets import ContrastiveLogit
from .gradcam import GradCAM


class ContrastiveGradCAM(GradCAM):
    def __init__(self, model, target_layer=None, batch_size: int = 16, jit_compile: bool = False, target=None):
        super().__init__(model, target_layer, batch_size, jit_compile, target or ContrastiveLogit())
