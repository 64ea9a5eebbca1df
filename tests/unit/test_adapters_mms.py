"""MMS (Pratap et al. 2023, "Scaling speech technology to 1,000+ languages") through the
wav2vec2 family: tiny random checkpoints with MMS's settings (stable layer norm, layer-normed
conv encoder with biases; MMS-1b-all's per-block language adapters).

Reference: ``transformers``' ``Wav2Vec2Model`` called with the feature extractor's outputs.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from speechlens.models import ADAPTERS
from tests.tiny_families import family, save_tiny_family
from tests.unit.test_adapters import test_lengths, waves

NAMES = ["mms", "mms_1b_all"]
SR = 16000


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_mms")
    out = {}
    for name in NAMES:
        save_tiny_family(name, root / name)
        adapter = ADAPTERS[family(name)](str(root / name))
        adapter.load()
        out[name] = adapter
    return root, out


@pytest.mark.parametrize("name", NAMES)
def test_mms_settings_and_frames(adapters, name):
    _, loaded = adapters
    adapter = loaded[name]
    cfg = adapter.config
    assert cfg.do_stable_layer_norm and cfg.feat_extract_norm == "layer" and cfg.conv_bias
    assert adapter.supports_padding and adapter.normalize
    assert (name == "mms_1b_all") == (adapter.model.encoder.layers[0].adapter_layer is not None)
    model = adapter.model
    for n in test_lengths(320, 400)[::4]:
        with torch.inference_mode():
            frames = model(torch.zeros(1, n)).last_hidden_state.shape[1]
        assert adapter.frame_count(n) == frames
    np.testing.assert_allclose(adapter.frame_times(2), [0.0125, 0.0325])


@pytest.mark.parametrize("name", NAMES)
def test_mms_equals_transformers_and_batches(adapters, name):
    import transformers

    root, loaded = adapters
    adapter = loaded[name]
    reference = transformers.Wav2Vec2Model.from_pretrained(root / name).eval()
    extractor = transformers.Wav2Vec2FeatureExtractor.from_pretrained(root / name)
    batch = waves([16000, 5000, 12345, 300, 7777])
    outputs = adapter.forward(batch)
    for wave, out in zip(batch, outputs, strict=True):
        (alone,) = adapter.forward([wave])
        np.testing.assert_allclose(out, alone, atol=1e-4, rtol=0)
        if len(wave) < 400:
            assert out.shape[1] == 0
            continue
        inputs = extractor(wave, sampling_rate=SR, return_tensors="pt")
        with torch.inference_mode():
            ref = reference(**inputs, output_hidden_states=True)
        hidden = torch.stack(ref.hidden_states)[:, 0].numpy()
        np.testing.assert_allclose(out[:-1], hidden[:-1], atol=1e-5)
        normed = reference.encoder.layer_norm(torch.from_numpy(out[-1])).detach().numpy()
        np.testing.assert_allclose(normed, ref.last_hidden_state[0].numpy(), atol=1e-5)


def test_mms_random_init(adapters):
    root, loaded = adapters
    (wave,) = waves([8000])
    runs = []
    for seed in (0, 0, 1):
        adapter = ADAPTERS["wav2vec2"](str(root / "mms"), init="random", seed=seed)
        adapter.load()
        runs.append(adapter.forward([wave])[0])
    np.testing.assert_array_equal(runs[0], runs[1])
    assert np.abs(runs[0][1:] - runs[2][1:]).max() > 1e-3
    assert np.abs(runs[0][1:] - loaded["mms"].forward([wave])[0][1:]).max() > 1e-3


def test_mms_example_config_validates():
    from pathlib import Path

    import yaml

    from speechlens.config import check_config

    root = Path(__file__).parents[2]
    config = yaml.safe_load((root / "config" / "examples" / "mms.yaml").read_text())
    check_config(config, root / "workflow" / "schemas" / "config.schema.yaml")
    assert {m["family"] for m in config["models"].values()} == {"wav2vec2"}
