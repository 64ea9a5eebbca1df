"""TERA: alterations (published proportions), model folder, ``tera`` adapter contract,
resumable training, and the schema defaults equal to the library's."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from speechlens.models import ADAPTERS, make_adapter
from speechlens.models.base import AdapterError, ModelSourceError
from speechlens.tera import model as tera_model
from speechlens.tera.alteration import (
    Alteration,
    alter,
    alter_batch,
    batch_time_spans,
    time_spans,
)
from speechlens.tera.data import TrainingDataError, load_split
from speechlens.tera.train import LOG_COLUMNS, STATE_NAME, TrainSettings, make_batch, train
from tests.conftest import REPO

SR = 16000
TINY_MODEL = {"hidden_size": 32, "num_layers": 2, "num_heads": 4, "intermediate_size": 64}


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """An (untrained) TERA folder with non-trivial normalisation, seed 1234."""
    torch.manual_seed(1234)
    rng = np.random.default_rng(0)
    config = tera_model.TeraConfig(
        **TINY_MODEL,
        mean=(rng.normal(-5, 1, 80)).tolist(),
        std=(rng.uniform(1, 3, 80)).tolist(),
    )
    return tera_model.save(tera_model.TeraModel(config), tmp_path_factory.mktemp("tera") / "m")


@pytest.fixture(scope="module")
def adapter(tiny_folder):
    adapter = ADAPTERS["tera"](str(tiny_folder))
    adapter.load()
    return adapter


def waves(lengths, seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


# ---------------------------------------------------------------------- alterations


def test_alterations_have_the_published_proportions():
    settings = Alteration.from_dict(None)
    assert (settings.time_proportion, settings.time_span) == (0.15, 7)
    rng = np.random.default_rng(7)
    n, c, trials = 700, 80, 2000
    actions, widths, noise, masked = [], [], [], []
    for _ in range(trials):
        x = rng.standard_normal((n, c)).astype(np.float32)
        out, mask, rec = alter(x, settings, rng)
        starts = rec["starts"]
        assert len(starts) == round(0.15 * n / 7) == 15
        assert np.all(np.diff(starts) >= 7) and starts[-1] + 7 <= n  # non-overlapping, inside
        selected = np.zeros(n, bool)
        for s in starts:
            selected[s : s + 7] = True
        masked.append(selected.mean())
        low, width = rec["channels"]
        widths.append(width)
        noise.append(rec["noise"])
        actions += list(rec["actions"])
        # the loss mask is exactly the altered positions
        expected = selected[:, None] | np.isin(np.arange(c), np.arange(low, low + width))[None]
        np.testing.assert_array_equal(mask, np.ones_like(mask) if rec["noise"] else expected)
        if not rec["noise"]:
            keep_ch = np.setdiff1d(np.arange(c), np.arange(low, low + width))
            assert np.all(out[:, low : low + width] == 0)
            np.testing.assert_array_equal(out[~selected][:, keep_ch], x[~selected][:, keep_ch])
            for s, action in zip(starts, rec["actions"], strict=True):
                span = out[s : s + 7, keep_ch]
                if action == "zero":
                    assert np.all(span == 0)
                elif action == "keep":
                    np.testing.assert_array_equal(span, x[s : s + 7, keep_ch])
                else:  # another span of the same utterance
                    windows = np.lib.stride_tricks.sliding_window_view(x[:, keep_ch], 7, axis=0)
                    assert np.any(np.all(windows == span.T[None], axis=(1, 2)))
    assert np.mean(masked) == pytest.approx(105 / 700)
    actions = np.asarray(actions)
    k = len(actions)  # 30000 spans: binomial sd of a 0.1 share is 0.0017
    assert np.mean(actions == "zero") == pytest.approx(0.8, abs=0.01)
    assert np.mean(actions == "replace") == pytest.approx(0.1, abs=0.01)
    assert np.mean(actions == "keep") == pytest.approx(0.1, abs=0.01)
    assert k == 15 * trials
    # channel block width uniform on 0..16 (20 % of 80): mean 8, every width seen
    assert set(widths) == set(range(17))
    assert np.mean(widths) == pytest.approx(8.0, abs=0.4)
    assert np.mean(noise) == pytest.approx(0.1, abs=0.02)


def test_magnitude_noise_has_its_std():
    settings = Alteration.from_dict(
        {
            "magnitude": {"probability": 1.0},
            "time": {"proportion": 0.0},
            "frequency": {"max_width": 0},
        }
    )
    x = np.zeros((500, 80), np.float32)
    out, mask, rec = alter(x, settings, np.random.default_rng(0))
    assert rec["noise"] and mask.all() and len(rec["starts"]) == 0
    assert out.std() == pytest.approx(0.2, rel=0.02) and abs(out.mean()) < 0.01


def test_time_spans_are_uniform_and_short_inputs_work():
    settings = Alteration.from_dict(None)
    rng = np.random.default_rng(1)
    starts = batch_time_spans(40000, 70, settings, rng)  # round(0.15 * 70 / 7) = 2 spans
    assert starts.shape == (40000, 2) and np.all(starts[:, 1] - starts[:, 0] >= 7)
    cover = np.bincount((starts[:, :, None] + np.arange(7)).ravel(), minlength=70)
    inner = cover[7:-7] / cover[7:-7].mean()
    # uniform placement away from the edges (exact expectation: within 0.036 of 1;
    # sampling sd ~0.011 per frame)
    assert np.abs(inner - 1).max() < 0.1
    assert len(time_spans(70, settings, rng)) == 2
    assert len(time_spans(10, settings, rng)) == 0  # round(0.21) = 0 spans
    out, mask, _ = alter(np.ones((3, 80), np.float32), settings, rng)
    assert out.shape == mask.shape == (3, 80)


def test_bad_alteration_settings_name_the_key():
    with pytest.raises(ValueError, match=r"alteration.time: unknown keys \['width'\]"):
        Alteration.from_dict({"time": {"width": 3}})
    with pytest.raises(ValueError, match="probability split"):
        Alteration.from_dict({"time": {"zero": 0.8, "replace": 0.3}})
    with pytest.raises(ValueError, match="unknown sections"):
        Alteration.from_dict({"pitch": {}})


def test_batch_alteration_alters_each_utterance_independently():
    settings = Alteration.from_dict(None)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 200, 80)).astype(np.float32)
    out, mask, rec = alter_batch(x, settings, rng)
    assert out.shape == mask.shape == x.shape and rec["starts"].shape == (64, 4)
    assert len({tuple(s) for s in rec["starts"]}) > 60  # rows drawn independently
    assert 0 < rec["noise"].sum() < 20
    for i in range(64):
        selected = np.zeros(200, bool)
        for s in rec["starts"][i]:
            selected[s : s + 7] = True
        low, width = rec["channels"][i]
        block = (np.arange(80) >= low) & (np.arange(80) < low + width)
        expected = np.ones_like(mask[i]) if rec["noise"][i] else selected[:, None] | block
        np.testing.assert_array_equal(mask[i], expected)
        if not rec["noise"][i]:
            np.testing.assert_array_equal(out[i][~expected], x[i][~expected])
            for s, action in zip(rec["starts"][i], rec["actions"][i], strict=True):
                if action == "zero":
                    assert np.all(out[i, s : s + 7] == 0)


def test_batches_crop_to_a_fixed_length_without_padding():
    rng = np.random.default_rng(0)
    utts = [rng.standard_normal((n, 80)).astype(np.float32) for n in (120, 90, 300)]
    batch = make_batch(utts, Alteration.from_dict(None), rng, crop_frames=80)
    assert batch["inputs"].shape == batch["target"].shape == (3, 80, 80)
    assert batch["attention_mask"].all()
    for i, x in enumerate(utts):  # each target is a contiguous crop of its utterance
        windows = np.lib.stride_tricks.sliding_window_view(x, 80, axis=0)
        assert np.any(np.all(windows == batch["target"][i].numpy().T[None], axis=(1, 2)))


def test_batches_pad_and_mask():
    utts = [np.ones((50, 80), np.float32), np.ones((30, 80), np.float32)]
    batch = make_batch(utts, Alteration.from_dict(None), np.random.default_rng(0), crop_frames=40)
    assert batch["inputs"].shape == batch["target"].shape == (2, 40, 80)
    assert batch["attention_mask"].sum(1).tolist() == [40, 30]
    assert not batch["loss_mask"][1, 30:].any()  # padding is never in the loss


# ---------------------------------------------------------------------- model and adapter


def test_model_folder_round_trip(tiny_folder):
    config, record = tera_model.read_config(tiny_folder)
    assert record["model_type"] == "tera" and config.hidden_size == 32
    a = tera_model.load(tiny_folder)
    b = tera_model.load(tiny_folder)
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(p, q), name
    pos = a.encoder.embeddings.position_embeddings.weight
    torch.testing.assert_close(pos, tera_model.sinusoids(3000, 32))
    assert not pos.requires_grad
    with pytest.raises(ValueError, match="multiple of num_heads"):
        tera_model.TeraConfig(hidden_size=30, num_heads=4)


def test_adapter_geometry(adapter):
    assert adapter.num_layers == 3 and adapter.num_heads == 4 and adapter.hidden_size == 32
    assert adapter.sample_rate == SR and adapter.frame_rate_hz == 100.0
    assert adapter.supports_padding
    np.testing.assert_allclose(adapter.frame_times(3), [0.0125, 0.0225, 0.0325])
    for n in [0, 1, 399, 400, 559, 560, 16000, 12345]:
        expected = 0 if n < 400 else 1 + (n - 400) // 160
        (out,) = adapter.forward(waves([n]))
        assert adapter.frame_count(n) == expected == out.shape[1]
        assert out.shape == (3, expected, 32) and out.dtype == np.float32
    logmel = ADAPTERS["logmel"]()
    logmel.load()
    assert adapter.frame_count(23456) == logmel.frame_count(23456)
    np.testing.assert_array_equal(adapter.frame_times(7), logmel.frame_times(7))


def test_adapter_equals_the_model_on_normalised_log_mel(adapter, tiny_folder):
    (wave,) = waves([9000])
    (ours,) = adapter.forward([wave])
    model = tera_model.load(tiny_folder).eval()
    config, _ = tera_model.read_config(tiny_folder)
    feats = adapter.frontend.log_mel(wave)
    x = (torch.from_numpy(feats) - torch.tensor(config.mean)) / torch.tensor(config.std)
    with torch.inference_mode():
        ref = model.encode(x[None].float(), output_hidden_states=True).hidden_states
    np.testing.assert_allclose(ours, torch.stack(ref)[:, 0].numpy(), atol=1e-5)


def test_batched_equals_one_at_a_time(adapter):
    batch = waves([16000, 5000, 12345, 300, 16000, 7777])
    outputs = adapter.forward(batch)
    for wave, out in zip(batch, outputs, strict=True):
        (alone,) = adapter.forward([wave])
        assert out.shape == alone.shape == (3, adapter.frame_count(len(wave)), 32)
        np.testing.assert_allclose(out, alone, atol=1e-4, rtol=0)
    assert outputs[3].shape[1] == 0


def test_attentions(adapter):
    batch = waves([16000, 6000, 9999])
    before = adapter.model.encoder.config._attn_implementation
    hidden, attn = adapter.forward(batch, output_attentions=True)
    assert adapter.model.encoder.config._attn_implementation == before
    for wave, h, weights in zip(batch, hidden, attn, strict=True):
        n = adapter.frame_count(len(wave))
        assert weights.shape == (2, 4, n, n) and (weights >= 0).all()
        np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
        (h_alone,), (alone,) = adapter.forward([wave], output_attentions=True)
        np.testing.assert_allclose(weights, alone, atol=1e-5, rtol=0)
        np.testing.assert_allclose(h, adapter.forward([wave])[0], atol=1e-4, rtol=0)


def test_attention_projections_see_the_heads_head_major(adapter):
    """The projection's input is [head 0 | head 1 | ...], head h = A_h @ V_h."""
    projections = adapter.attention_projections()
    assert len(projections) == adapter.num_layers - 1
    seen = {}
    hooks = [
        p.register_forward_pre_hook(lambda m, args, i=i: seen.__setitem__(i, args[0].clone()))
        for i, p in enumerate(projections)
    ]
    try:
        (wave,) = waves([8000])
        (hidden,), (attn,) = adapter.forward([wave], output_attentions=True)
    finally:
        for h in hooks:
            h.remove()
    d = 32 // 4
    for block, layer in enumerate(adapter.model.encoder.encoder.layer):
        x = torch.from_numpy(hidden[block])
        values = layer.attention.self.value(x).detach().numpy()
        got = seen[block][0].numpy()
        for head in range(4):
            cols = slice(head * d, (head + 1) * d)
            np.testing.assert_allclose(got[:, cols], attn[block, head] @ values[:, cols], atol=1e-5)


def test_head_ablation_hooks_work_on_tera(adapter):
    """No heads: the exact features; all heads of block 1: the block without attention
    (post-LN BERT: LN(x + out_bias), then the feed-forward sub-block)."""
    from speechlens.attention.hooks import ablate

    (wave,) = waves([8000])
    (plain,) = adapter.forward([wave])
    with ablate(adapter, {1: [], 2: []}):
        (same,) = adapter.forward([wave])
    np.testing.assert_array_equal(same, plain)
    with ablate(adapter, {1: [0, 1, 2, 3]}):
        (ablated,) = adapter.forward([wave])
    layer = adapter.model.encoder.encoder.layer[0]
    with torch.inference_mode():
        x = torch.from_numpy(plain[0])
        a = layer.attention.output.LayerNorm(x + layer.attention.output.dense.bias)
        expected = layer.output.LayerNorm(layer.output.dense(layer.intermediate(a)) + a)
    np.testing.assert_allclose(ablated[1], expected.numpy(), atol=1e-5)
    np.testing.assert_array_equal(ablated[0], plain[0])
    assert np.abs(ablated[1] - plain[1]).max() > 1e-3


def test_random_init_is_seeded_and_provenance(tiny_folder, adapter):
    batch = waves([8000])

    def run(**kwargs):
        a = ADAPTERS["tera"](str(tiny_folder), **kwargs)
        a.load()
        return a.forward(batch)[0], a.provenance()

    first, prov = run(init="random", seed=0)
    again, _ = run(init="random", seed=0)
    other, _ = run(init="random", seed=1)
    np.testing.assert_array_equal(first, again)
    assert np.abs(first[1:] - other[1:]).max() > 1e-3
    assert np.abs(first[1:] - adapter.forward(batch)[0][1:]).max() > 1e-3
    assert prov["weights"] == "random-init seed 0" and prov["init"] == "random"
    digest = hashlib.sha256((tiny_folder / "model.safetensors").read_bytes()).hexdigest()
    assert adapter.provenance()["weights"] == {"model.safetensors": digest}


def test_adapter_errors(tmp_path, adapter):
    with pytest.raises(ModelSourceError, match="does not exist"):
        ADAPTERS["tera"](str(tmp_path / "missing")).load()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ModelSourceError, match="not 'tera'"):
        ADAPTERS["tera"](str(tmp_path / "other")).load()
    with pytest.raises(AdapterError, match="source"):
        ADAPTERS["tera"]()
    with pytest.raises(AdapterError, match="at most 30.0"):
        adapter.forward([np.zeros(30 * SR + 400, np.float32)])


def test_make_adapter_resolves_train_sources(tiny_folder):
    spec = {"family": "tera", "source": "train:en-us"}
    with pytest.raises(ValueError, match="trained checkpoint folder"):
        make_adapter(spec, {})
    adapter = make_adapter(spec, {"device": "cpu"}, checkpoint=str(tiny_folder))
    assert adapter.source == str(tiny_folder)


# ---------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory) -> Path:
    from speechlens.corpora.synthetic import build

    out = tmp_path_factory.mktemp("tera_corpus") / "c"
    spec = {"kind": "synthetic", "languages": ["en-us", "tr"], "speakers_per_language": 3,
            "sentences_per_speaker": 2, "seed": 0}  # fmt: skip
    build(spec, out, threads=1)
    return out / "utterances.tsv"


RESUME = {
    "steps": 6,
    "batch_size": 3,
    "crop_frames": 120,
    "warmup_steps": 2,
    "eval_every": 3,
    "checkpoint_every": 3,
    "heldout_speakers": 1,
    "model": TINY_MODEL,
}


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def test_split_holds_out_speakers(tiny_corpus):
    split = load_split(tiny_corpus, "tr", heldout_speakers=1)
    assert len(split.train) == 4 and len(split.heldout) == 2
    assert split.heldout_speakers == ["tr_m02"] or len(split.heldout_speakers) == 1
    assert not set(split.heldout_speakers) & set(split.train_speakers)
    with pytest.raises(TrainingDataError, match="no utterances of language 'de'"):
        load_split(tiny_corpus, "de")
    with pytest.raises(TrainingDataError, match="heldout_speakers"):
        load_split(tiny_corpus, "tr", heldout_speakers=3)


def test_resume_after_interruption_gives_the_uninterrupted_weights(tiny_corpus, tmp_path):
    torch.set_num_threads(1)
    full = train(tiny_corpus, "en-us", tmp_path / "full", RESUME, state_dir=tmp_path / "s1")

    def interrupt(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_corpus, "en-us", tmp_path / "resumed", RESUME, state_dir=tmp_path / "s2",
              on_step=interrupt)  # fmt: skip
    state = torch.load(tmp_path / "s2" / STATE_NAME, weights_only=False)
    assert state["step"] == 3 and not (tmp_path / "resumed").exists()
    steps = []
    resumed = train(tiny_corpus, "en-us", tmp_path / "resumed", RESUME, state_dir=tmp_path / "s2",
                    on_step=steps.append)  # fmt: skip
    assert steps == [4, 5, 6]  # continued, not restarted
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "resumed")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    cols = ["step", "lr", "train_loss", "heldout_loss", "heldout_mean_loss"]
    pd.testing.assert_frame_equal(full[cols], resumed[cols])
    assert not (tmp_path / "s2" / STATE_NAME).exists()  # finished: state removed
    # other settings: the saved state is not resumed
    train(tiny_corpus, "en-us", tmp_path / "x", {**RESUME, "steps": 3}, state_dir=tmp_path / "s3")
    assert list(full.columns) == LOG_COLUMNS and full["step"].tolist() == [0, 3, 6]
    written = pd.read_csv(tmp_path / "full" / "training_log.tsv", sep="\t")
    assert written["step"].tolist() == [0, 3, 6]
    assert (tmp_path / "full" / "loss_curve.png").stat().st_size > 5000
    _, record = tera_model.read_config(tmp_path / "full")
    assert record["training"]["language"] == "en-us"
    assert (
        record["training"]["heldout_speakers"] == ["en-us_m02"]
        or record["training"]["heldout_speakers"]
    )


def test_changed_settings_start_over(tiny_corpus, tmp_path):
    torch.set_num_threads(1)

    def interrupt(step):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(tiny_corpus, "en-us", tmp_path / "m", RESUME, state_dir=tmp_path / "s",
              on_step=interrupt)  # fmt: skip
    steps = []
    train(tiny_corpus, "en-us", tmp_path / "m", {**RESUME, "lr": 3e-3}, state_dir=tmp_path / "s",
          on_step=steps.append)  # fmt: skip
    assert steps[0] == 1


# ---------------------------------------------------------------------- config


def test_the_library_reads_its_defaults_from_the_schema():
    """The published TERA settings are written once, in the config schema; the library's
    defaults (training, architecture, alteration) are those values."""
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    props = schema["properties"]["training"]["properties"]
    settings = TrainSettings()
    for key, spec in props.items():
        if key in ("corpus", "threads", "model", "alteration"):
            continue
        assert spec["default"] == getattr(settings, key), key
    model_defaults = tera_model.TeraConfig()
    for key, spec in props["model"]["properties"].items():
        assert spec["default"] == getattr(model_defaults, key), key
    alteration = Alteration.from_dict(None)
    for section, spec in props["alteration"]["properties"].items():
        for key, value in spec["properties"].items():
            assert getattr(alteration, f"{section}_{key}") == value["default"], (section, key)
    # the published proportions (Liu et al. 2021, section III)
    assert (alteration.time_proportion, alteration.time_span) == (0.15, 7)
    assert (alteration.time_zero, alteration.time_replace) == (0.8, 0.1)
    assert alteration.frequency_max_width == 0.2
    assert (alteration.magnitude_probability, alteration.magnitude_std) == (0.1, 0.2)
    # a user's section overrides only its own keys
    custom = Alteration.from_dict({"time": {"span": 3}})
    assert custom.time_span == 3 and custom.time_proportion == 0.15
    with pytest.raises(ValueError, match=r"alteration.time: unknown keys \['spam'\]"):
        Alteration.from_dict({"time": {"spam": 1}})
    for source in (REPO / "src/speechlens/tera").glob("*.py"):
        assert "DEFAULTS: dict" not in source.read_text(), f"{source.name} repeats defaults"
