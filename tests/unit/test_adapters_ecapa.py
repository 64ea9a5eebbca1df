"""ECAPA-TDNN (SpeechBrain checkpoint format) against SpeechBrain's own code.

SpeechBrain (``pip install --no-deps speechbrain==1.1.2``, see the Makefile) imports torchaudio
at import time; none of the classes compared here call it, so a stand-in ``torchaudio`` module
(and a bare ``speechbrain`` package, skipping its ``__init__``'s trainer imports) is put into
``sys.modules`` only while importing them. Random init, same state dict, same outputs.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import importlib.util
import sys
import types

import numpy as np
import pytest
import torch

from speechlens.models import ADAPTERS, has_capability
from speechlens.models.base import AdapterError, ModelSourceError
from speechlens.models.ecapa_net import ECAPA_TDNN
from tests.unit.test_adapters import test_lengths, waves

SR = 16000
TINY = {
    "n_mels": 24,
    "channels": [32, 32, 32, 32, 96],
    "kernel_sizes": [5, 3, 3, 3, 1],
    "dilations": [1, 2, 3, 4, 1],
    "attention_channels": 16,
    "lin_neurons": 12,
    "se_channels": 8,
    "res2net_scale": 4,
}


def hyperparams(cfg: dict, std_norm: bool = False) -> str:
    """A hyperparams.yaml in the layout of speechbrain/spkrec-ecapa-voxceleb."""
    return f"""# ECAPA big for speaker verification (tiny)
n_mels: {cfg["n_mels"]}
pretrained_path: speechbrain/spkrec-ecapa-voxceleb
out_n_neurons: 7
compute_features: !new:speechbrain.lobes.features.Fbank
    n_mels: !ref <n_mels>
mean_var_norm: !new:speechbrain.processing.features.InputNormalization
    norm_type: sentence
    std_norm: {std_norm}
embedding_model: !new:speechbrain.lobes.models.ECAPA_TDNN.ECAPA_TDNN
    input_size: !ref <n_mels>
    channels: {cfg["channels"]}
    kernel_sizes: {cfg["kernel_sizes"]}
    dilations: {cfg["dilations"]}
    attention_channels: {cfg["attention_channels"]}
    lin_neurons: {cfg["lin_neurons"]}
    se_channels: {cfg.get("se_channels", 128)}
    res2net_scale: {cfg.get("res2net_scale", 8)}
classifier: !new:speechbrain.lobes.models.ECAPA_TDNN.Classifier
    input_size: {cfg["lin_neurons"]}
    out_neurons: !ref <out_n_neurons>
modules:
    compute_features: !ref <compute_features>
    embedding_model: !ref <embedding_model>
label_encoder: !new:speechbrain.dataio.encoder.CategoricalEncoder
"""


@pytest.fixture(scope="module")
def sb():
    """SpeechBrain's ECAPA, Fbank and InputNormalization modules (see the module docstring)."""
    if importlib.util.find_spec("speechbrain") is None:  # its __init__ cannot be imported here
        pytest.skip("reference missing: pip install --no-deps speechbrain==1.1.2 (make install)")
    saved = {k: sys.modules.get(k) for k in ("torchaudio", "speechbrain")}
    stand_in = types.ModuleType("torchaudio")
    stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
    stand_in.__version__ = "0.0.0"
    spec = importlib.util.find_spec("speechbrain")
    package = types.ModuleType("speechbrain")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__ = spec
    sys.modules.update({"torchaudio": stand_in, "speechbrain": package})
    try:
        ecapa = importlib.import_module("speechbrain.lobes.models.ECAPA_TDNN")
        features = importlib.import_module("speechbrain.lobes.features")
        processing = importlib.import_module("speechbrain.processing.features")
    finally:
        for key, module in saved.items():
            if module is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = module
    return types.SimpleNamespace(
        ECAPA_TDNN=ecapa.ECAPA_TDNN,
        Fbank=features.Fbank,
        InputNormalization=processing.InputNormalization,
    )


def reference_model(sb, cfg: dict, seed: int = 7):
    """SpeechBrain's ECAPA with random weights and batch-norm statistics (eval mode)."""
    torch.manual_seed(seed)
    model = sb.ECAPA_TDNN(
        input_size=cfg["n_mels"],
        **{k: v for k, v in cfg.items() if k != "n_mels"},
    )
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d):
            module.running_mean.normal_(0, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.normal_(1, 0.2)
            module.bias.data.normal_(0, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def checkpoint(sb, tmp_path_factory):
    folder = tmp_path_factory.mktemp("ecapa")
    (folder / "hyperparams.yaml").write_text(hyperparams(TINY))
    model = reference_model(sb, TINY)
    torch.save(model.state_dict(), folder / "embedding_model.ckpt")
    return folder, model


@pytest.fixture(scope="module")
def adapter(checkpoint):
    folder, _ = checkpoint
    adapter = ADAPTERS["ecapa"](str(folder))
    adapter.load()
    return adapter


def test_registered_with_capabilities():
    assert ADAPTERS["ecapa"].family == "ecapa"
    assert has_capability("ecapa", "utterance_level")
    assert not has_capability("ecapa", "self_attention")


def test_published_layout_loads_with_strict_keys(sb):
    """spkrec-ecapa-voxceleb's sizes: SpeechBrain's state dict loads strictly into ours."""
    spkrec = {
        "channels": [1024, 1024, 1024, 1024, 3072],
        "kernel_sizes": [5, 3, 3, 3, 1],
        "dilations": [1, 2, 3, 4, 1],
        "attention_channels": 128,
        "lin_neurons": 192,
    }
    theirs = sb.ECAPA_TDNN(input_size=80, **spkrec).state_dict()
    ours = ECAPA_TDNN(input_size=80, **spkrec)
    ours.load_state_dict(theirs, strict=True)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {
        k: v.shape for k, v in theirs.items()
    }


def test_layers_and_geometry(adapter):
    assert adapter.layer_names == ("fbank", "tdnn", "se_res2.1", "se_res2.2", "se_res2.3", "mfa")
    assert adapter.layer_widths == (24, 32, 32, 32, 32, 96)
    assert (adapter.num_layers, adapter.hidden_size, adapter.embedding_size) == (6, 96, 12)
    assert adapter.frame_rate_hz == 100.0 and adapter.sample_rate == SR
    np.testing.assert_allclose(adapter.frame_times(3), [0.0, 0.01, 0.02])


def test_features_equal_speechbrain(sb, adapter):
    fbank, norm = sb.Fbank(n_mels=24), sb.InputNormalization(norm_type="sentence", std_norm=False)
    norm.eval()
    lengths = [*test_lengths(160, 0)[::3], 640, 641, 799]
    for n in lengths:
        (wave,) = waves([n], seed=n)
        with torch.inference_mode():
            theirs = norm(fbank(torch.from_numpy(wave)[None]), torch.ones(1))
        ours = adapter.features([wave])
        assert ours.shape[1] == theirs.shape[1] == adapter.fbank.frames(n) == 1 + n // 160
        assert adapter.frame_count(n) == (1 + n // 160 if n >= 640 else 0)
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=2e-4, rtol=1e-5)
    assert [adapter.frame_count(n) for n in (0, 639, 640, 800)] == [0, 0, 5, 6]


def test_std_norm_equals_speechbrain(sb, checkpoint, tmp_path):
    folder, _ = checkpoint
    (tmp_path / "hyperparams.yaml").write_text(hyperparams(TINY, std_norm=True))
    (tmp_path / "embedding_model.ckpt").write_bytes((folder / "embedding_model.ckpt").read_bytes())
    adapter = ADAPTERS["ecapa"](str(tmp_path))
    adapter.load()
    fbank, norm = sb.Fbank(n_mels=24), sb.InputNormalization(norm_type="sentence", std_norm=True)
    (wave,) = waves([12345])
    with torch.inference_mode():
        theirs = norm.eval()(fbank(torch.from_numpy(wave)[None]), torch.ones(1))
    np.testing.assert_allclose(adapter.features([wave]).numpy(), theirs.numpy(), atol=1e-4)


def test_outputs_equal_speechbrain(sb, checkpoint, adapter):
    _, model = checkpoint
    for n in (800, 9999, 16000):
        (wave,) = waves([n], seed=1)
        feats = adapter.features([wave])
        outs = []
        keep = outs.append
        hooks = [b.register_forward_hook(lambda _m, _a, o, k=keep: k(o)) for b in model.blocks]
        hooks.append(model.mfa.register_forward_hook(lambda _m, _a, o, k=keep: k(o)))
        with torch.inference_mode():
            embedding = model(feats)
        for hook in hooks:
            hook.remove()
        hidden, vectors = adapter.forward_with_embeddings([wave])
        ours = hidden[0]
        assert ours.shape == (6, 1 + n // 160, 96)
        np.testing.assert_allclose(ours[0, :, :24], feats[0].numpy(), atol=1e-6)
        for layer, ref in enumerate(outs, start=1):
            width = ref.shape[1]
            np.testing.assert_allclose(ours[layer, :, :width], ref[0].T.numpy(), atol=1e-4)
            assert (ours[layer, :, width:] == 0).all()
        np.testing.assert_allclose(vectors[0], embedding[0].numpy(), atol=1e-4)
        assert np.abs(vectors[0]).max() > 1e-2


def test_batched_equals_alone(adapter):
    batch = waves([16000, 5000, 12345, 300, 16000, 7777])
    hidden = adapter.forward(batch)
    for wave, h in zip(batch, hidden, strict=True):
        assert h.shape == (6, adapter.frame_count(len(wave)), 96) and h.dtype == np.float32
        np.testing.assert_allclose(h, adapter.forward([wave])[0], atol=1e-4, rtol=0)
    assert hidden[3].shape[1] == 2 or hidden[3].shape[1] == 0
    full = [w for w in batch if len(w) >= 640]
    vectors = adapter.embeddings(full)
    for wave, v in zip(full, vectors, strict=True):
        np.testing.assert_allclose(v, adapter.embeddings([wave])[0], atol=1e-4, rtol=0)
    with pytest.raises(AdapterError, match="utterance 0 .300 samples. is too short"):
        adapter.embeddings([batch[3]])


def test_random_init_is_seeded(checkpoint, adapter):
    folder, _ = checkpoint
    (wave,) = waves([8000])

    def run(seed):
        a = ADAPTERS["ecapa"](str(folder), init="random", seed=seed)
        a.load()
        return a.forward_with_embeddings([wave]), a.provenance()

    (h0, v0), prov = run(0)
    (h0b, v0b), _ = run(0)
    (h1, v1), _ = run(1)
    trained_h, trained_v = adapter.forward_with_embeddings([wave])
    np.testing.assert_array_equal(h0[0], h0b[0])
    np.testing.assert_array_equal(v0[0], v0b[0])
    assert np.abs(v0[0] - v1[0]).max() > 1e-3 and np.abs(v0[0] - trained_v[0]).max() > 1e-3
    assert np.abs(h0[0][1:] - trained_h[0][1:]).max() > 1e-3
    np.testing.assert_array_equal(h0[0][0], trained_h[0][0])  # same features
    assert prov["weights"] == "random-init seed 0"
    assert set(adapter.provenance()["weights"]) == {"hyperparams.yaml", "embedding_model.ckpt"}


def test_source_errors(checkpoint, tmp_path, monkeypatch):
    import huggingface_hub.constants

    folder, _ = checkpoint
    (tmp_path / "hyperparams.yaml").write_text((folder / "hyperparams.yaml").read_text())
    with pytest.raises(ModelSourceError, match="has no embedding_model.ckpt"):
        ADAPTERS["ecapa"](str(tmp_path)).load()
    torch.save({"blocks.0.conv.conv.weight": torch.zeros(1)}, tmp_path / "embedding_model.ckpt")
    with pytest.raises(AdapterError, match="does not match"):
        ADAPTERS["ecapa"](str(tmp_path)).load()
    with pytest.raises(ModelSourceError, match="folder '/no/such/ecapa' does not exist"):
        ADAPTERS["ecapa"]("/no/such/ecapa").load()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelSourceError) as err:
        ADAPTERS["ecapa"]("speechbrain/not-cached-ecapa", revision="abc").load()
    message = str(err.value)
    assert "'speechbrain/not-cached-ecapa'" in message and "revision abc" in message
    assert "hf download speechbrain/not-cached-ecapa --revision abc" in message
