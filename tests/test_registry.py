"""One registry of explainers: every entry builds from its name on a registry backbone and returns [0, 1] maps of
the input's size; the CLI, the API and the app offer exactly the registry's names."""
import numpy as np
import pytest

from xai_cxr.explain.registry import EXPLAINERS, explainer_names, get_spec, layers_for, make_explainer


@pytest.fixture(scope="module")
def small_model():
    import keras

    from xai_cxr.config import ModelConfig
    from xai_cxr.models import build_model
    keras.utils.set_random_seed(0)
    return build_model(ModelConfig(backbone="cxr-small", weights="none"), 32)


@pytest.mark.parametrize("name", [n for n in EXPLAINERS if n not in ("lime", "shap", "scorecam")])
def test_every_explainer_builds_by_name_and_returns_unit_maps(name, small_model):
    x = np.random.default_rng(1).uniform(0, 1, (2, 32, 32, 3)).astype(np.float32)
    maps = make_explainer(name, small_model, "cxr-small")(x, np.array([0, 1]))
    assert maps.shape == (2, 32, 32) and np.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1 + 1e-6


def test_layers_come_from_the_backbone_or_the_card():
    assert layers_for("gradcam", "vgg19") == ("block5_conv3",)
    assert layers_for("fused", "vgg19") == ("block4_conv4", "block5_conv2", "block5_conv3")
    assert layers_for("smoothgrad", "vgg19") == ()
    assert layers_for("gradcam", "ensemble") == ("out_relu", "relu")       # an ensemble's members, fused
    assert layers_for("hirescam", "vgg19", "block4_conv4") == ("block4_conv4",)
    with pytest.raises(ValueError, match="choose from"):
        get_spec("no-such-map")


def test_registry_filters_pick_the_fast_maps_and_the_default_audit():
    # the CAMs cost one forward and backward pass; Score-CAM one forward per channel, attributions many passes
    fast = explainer_names(fast_only=True)
    assert {"gradcam", "gradcam++", "hirescam", "layercam", "contrastive"} <= set(fast)
    assert not {"scorecam", "ablationcam", "lime", "shap", "rise", "occlusion"} & set(fast)
    assert fast == [n for n in EXPLAINERS if get_spec(n).cost == "fast"]        # registry order, each by its cost
    # Ablation-CAM reruns the network after the target layer once per channel: slow on VGG19, not audited by default
    audited = explainer_names(audited_by_default=True)
    assert "scorecam" in audited and "ablationcam" not in audited
    assert not {n for n in EXPLAINERS if get_spec(n).reads == "input"} & set(audited)   # attributions: on request
