import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="export tests need the [train] extra")

from maskwatch.models.mask_classifier import MaskClassifier, ModelInfo, read_model_info  # noqa: E402
from maskwatch.ops.crop import crops_to_tensor  # noqa: E402
from maskwatch.train.backbones import BackboneUnavailable, MaskNet  # noqa: E402
from maskwatch.train.export import export_onnx  # noqa: E402


@pytest.mark.parametrize("head", ["pool", "dense"])
def test_onnx_and_torch_agree(tmp_path, head):
    torch.manual_seed(0)
    model = MaskNet("efficientnet_lite0", 3, 64, head=head).eval()
    info = ModelInfo(input_size=64, backbone="efficientnet_lite0", head=head, data={"n": 0})
    path = export_onnx(model, tmp_path / "m.onnx", info)
    crops = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    clf = MaskClassifier(path)
    with torch.no_grad():
        p_torch = torch.softmax(model(torch.from_numpy(crops_to_tensor(crops))), 1).numpy()
    np.testing.assert_allclose(clf.predict_crops(crops), p_torch, atol=1e-5)
    assert read_model_info(path) == info


def test_mobilenet_v2_loads_imagenet_weights_or_says_what_to_install():
    try:
        net = MaskNet("mobilenet_v2", 3, 64)
    except BackboneUnavailable as exc:
        assert "pip install" in str(exc)
        return
    assert net(torch.zeros(2, 3, 64, 64)).shape == (2, 3)


def test_unknown_backbone_and_head():
    with pytest.raises(ValueError, match="unknown backbone"):
        MaskNet("vgg", 3, 64)
    with pytest.raises(ValueError, match="unknown head"):
        MaskNet("efficientnet_lite0", 3, 64, head="deep")
