import pytest
import torch
from torchvision.models import resnet18

from deepfakenet.models import DeepfakeNet


def test_forward_features_and_probabilities():
    net = DeepfakeNet(crop_size=32).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        logits, feats, prob = net(x), net.features(x), net.predict_proba(x)
    assert logits.shape == (4, 2)
    assert feats.shape == (4, 512)
    assert prob.shape == (4,) and ((prob >= 0) & (prob <= 1)).all()
    # The features are exactly what the head sees.
    torch.testing.assert_close(net.backbone.fc(feats), logits)


def test_temperature_and_threshold_travel_in_the_state_dict():
    net = DeepfakeNet()
    net.temperature.fill_(2.0)
    net.threshold.fill_(0.7)
    other = DeepfakeNet()
    other.load_state_dict(net.state_dict())
    assert float(other.temperature) == 2.0 and float(other.threshold) == pytest.approx(0.7)
    logits = torch.tensor([[0.0, 2.0]])
    assert float(other.prob_from_logits(logits)) == pytest.approx(
        torch.sigmoid(torch.tensor(1.0)).item()
    )
    assert other.decide(torch.tensor([0.69, 0.71])).tolist() == [0, 1]


def test_local_weights_are_loaded(tmp_path):
    reference = resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    net = DeepfakeNet(weights=str(path))
    torch.testing.assert_close(net.backbone.conv1.weight, reference.conv1.weight)
    assert net.backbone.fc.out_features == 2


def test_missing_weights_fail_clearly_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not in the local cache"):
        DeepfakeNet(weights="IMAGENET1K_V1")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DeepfakeNet(weights=str(tmp_path / "nope.pth"))


def test_highpass_input_filter_ignores_flat_content_and_keeps_state_dict_keys():
    plain, filtered = DeepfakeNet(crop_size=32), DeepfakeNet(crop_size=32, input_filter="highpass")
    assert set(filtered.state_dict()) == set(plain.state_dict()), "the filter has no weights"
    flat = torch.full((1, 3, 32, 32), 0.7)
    assert filtered.input_filter(flat).abs().max() < 1e-6
    x = torch.randn(2, 3, 32, 32)
    filtered.eval()
    with torch.no_grad():
        torch.testing.assert_close(filtered.backbone.fc(filtered.features(x)), filtered(x))
    with pytest.raises(ValueError, match="input_filter"):
        DeepfakeNet(input_filter="sobel")


def test_models_pickled_before_the_input_filter_still_load():
    import pickle

    net = DeepfakeNet(crop_size=32).eval()
    del net._modules["input_filter"]  # what an older pickled model looks like
    del net._buffers["logit_bias"]
    restored = pickle.loads(pickle.dumps(net))
    with torch.no_grad():
        assert restored(torch.randn(1, 3, 32, 32)).shape == (1, 2)
        assert float(restored.logit_bias) == 0.0
        prob = restored.predict_proba(torch.randn(1, 3, 32, 32))
    assert prob.shape == (1,)
    assert "logit_bias" in restored.state_dict(), "a warm start can load it into a new net"


def test_warm_start_refuses_weights_learnt_on_another_input_filter():
    from deepfakenet.errors import ConfigError
    from deepfakenet.pipeline import _check_warm_start

    plain, highpass = DeepfakeNet(crop_size=32), DeepfakeNet(crop_size=32, input_filter="highpass")
    highpass.load_state_dict(plain.state_dict())  # loads: the filter has no parameters
    with pytest.raises(ConfigError, match="input filter"):
        _check_warm_start(plain, highpass)
    _check_warm_start(highpass, DeepfakeNet(crop_size=32, input_filter="highpass"))
