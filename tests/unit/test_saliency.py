"""Cross-attention vs saliency (speechlens.saliency): token alignment, gradients, the RISE-style
grid occlusion, centred pooling, correlations on valid frames, cross-fitted best heads, and a
synthetic model whose attention is its saliency. SPES: test_saliency_spes.py."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from speechlens.config import ConfigError, check_config
from speechlens.saliency import correlate, methods
from speechlens.saliency.forced import teacher_forcing
from speechlens.saliency.pipeline import check_settings, select_utterances
from speechlens.saliency.pooling import pool_to_encoder_grid
from speechlens.saliency.whisper import TokenPass, WhisperForSaliency
from tests.conftest import REPO
from tests.tiny_models import save_tiny

PROMPT = (2, 5)  # the tiny model's start token and a second prompt token
CONTENT = (7, 11, 13, 17)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny random WhisperForConditionalGeneration (vocab 64), in float64."""
    path = save_tiny("whisper", tmp_path_factory.mktemp("whisper"))
    model = WhisperForSaliency(str(path), device="cpu", require_tokenizer=False)
    model.model.double()
    return model


@pytest.fixture(scope="module")
def mel(tiny):
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(16000)).astype(np.float32)  # 1 s: 100 mel frames
    return tiny.log_mel(wave).double()


def test_teacher_forcing_shifts_targets_by_one():
    ids, positions, targets = teacher_forcing([50257, 50362], [40, 1043, 257])
    assert ids.tolist() == [50257, 50362, 40, 1043]  # the last token is never read
    assert positions.tolist() == [1, 2, 3]  # token k is predicted at position P + k - 1
    assert targets.tolist() == [40, 1043, 257]
    ids, positions, targets = teacher_forcing([50257], [])
    assert ids.tolist() == [50257] and positions.size == 0 and targets.size == 0
    with pytest.raises(ValueError, match="prompt"):
        teacher_forcing([], [1])


def test_logprob_and_attention_are_taken_at_the_predicting_position(tiny, mel):
    """Each token's log-prob and cross-attention equal a run on the prefix before it."""
    ids, positions, targets = teacher_forcing(PROMPT, CONTENT)
    with torch.no_grad():
        out = tiny.decode(tiny.encode(mel), ids, positions, targets, attentions=True)
        full = list(PROMPT + CONTENT)
        for k, token in enumerate(CONTENT):
            prefix = torch.tensor([full[: len(PROMPT) + k]])
            ref = tiny.model(input_features=mel, decoder_input_ids=prefix, output_attentions=True)
            logprob = torch.log_softmax(ref.logits[0, -1], -1)[token]
            assert out.logprob[0, k].item() == pytest.approx(logprob.item(), abs=1e-10)
            for layer, attn in enumerate(ref.cross_attentions):
                torch.testing.assert_close(out.cross[layer, 0, :, k], attn[0, :, -1])
    # the previous position's logits give a different number (the shift matters)
    shifted = torch.log_softmax(ref.logits[0, -2], -1)[CONTENT[-1]].item()
    assert abs(shifted - out.logprob[0, -1].item()) > 1e-6


def test_encoder_runs_fused_attention_and_equals_the_eager_encoder(tiny, mel):
    """Only the decoder's attention weights are read: the encoder runs SDPA, and its output
    is the eager encoder's (float64: equal to rounding); the decoder stays eager."""
    from transformers import WhisperForConditionalGeneration

    enc, dec = tiny.model.model.encoder, tiny.model.model.decoder
    assert {layer.self_attn.config._attn_implementation for layer in enc.layers} == {"sdpa"}
    assert {layer.encoder_attn.config._attn_implementation for layer in dec.layers} == {"eager"}
    eager = WhisperForConditionalGeneration.from_pretrained(
        tiny.source, attn_implementation="eager"
    ).double()
    with torch.no_grad():
        torch.testing.assert_close(
            tiny.encode(mel), eager.model.encoder(input_features=mel).last_hidden_state
        )


def _logprob(tiny, x, k):
    ids, positions, targets = teacher_forcing(PROMPT, CONTENT)
    with torch.no_grad():
        return tiny.decode(tiny.encode(x), ids, positions, targets).logprob[0, k].item()


@pytest.mark.parametrize("grad_batch", [1, 3])
def test_gradient_x_input_equals_finite_differences(tiny, mel, grad_batch):
    ids, positions, targets = teacher_forcing(PROMPT, CONTENT)
    res = methods.gradient_saliency(tiny, mel, ids, positions, targets, grad_batch=grad_batch)
    assert res.input_map.shape == (4, 80, 3000) and res.gradient_x_input.shape == (4, 1500)
    k = 2
    rng = np.random.default_rng(1)
    eps = 1e-5
    for b, t in zip(rng.integers(0, 80, 4), rng.integers(0, 100, 4), strict=True):
        plus, minus = mel.clone(), mel.clone()
        plus[0, b, t] += eps
        minus[0, b, t] -= eps
        grad = (_logprob(tiny, plus, k) - _logprob(tiny, minus, k)) / (2 * eps)
        assert res.input_map[k, b, t] == pytest.approx(
            grad * mel[0, b, t].item(), rel=1e-5, abs=1e-9
        )
    # absolute: |g x| summed over mel bins, pooled centred: 2j fully, 2j - 1 and 2j + 1 half
    per_mel = np.abs(res.input_map).sum(1)
    j = 10
    expected = per_mel[:, 2 * j] + 0.5 * (per_mel[:, 2 * j - 1] + per_mel[:, 2 * j + 1])
    np.testing.assert_allclose(res.gradient_x_input[:, j], expected, rtol=1e-6)


def test_encoder_output_saliency_equals_finite_differences(tiny, mel):
    ids, positions, targets = teacher_forcing(PROMPT, CONTENT)
    res = methods.gradient_saliency(tiny, mel, ids, positions, targets, sign="signed")
    norm = methods.gradient_saliency(tiny, mel, ids, positions, targets, encoder="grad_norm")
    with torch.no_grad():
        states = tiny.encode(mel)
    k, frame, eps = 1, 7, 1e-4
    grad = np.zeros(states.shape[-1])
    for f in range(states.shape[-1]):
        plus, minus = states.clone(), states.clone()
        plus[0, frame, f] += eps
        minus[0, frame, f] -= eps
        with torch.no_grad():
            up = tiny.decode(plus, ids, positions, targets).logprob[0, k].item()
            down = tiny.decode(minus, ids, positions, targets).logprob[0, k].item()
        grad[f] = (up - down) / (2 * eps)
    terms = grad * states[0, frame].numpy()
    scale = np.abs(terms).sum()  # the sum cancels: compare on the scale of its terms
    assert res.encoder_output[k, frame] == pytest.approx(terms.sum(), abs=1e-6 * scale)
    assert norm.encoder_output[k, frame] == pytest.approx(np.linalg.norm(grad), rel=1e-5)


def test_pooling_is_centred_on_the_encoder_frame():
    """An impulse at mel frame i (centred at 10 i ms) lands, by its centre of mass, at 10 i ms
    on the encoder grid (frame j centred at 20 j ms): no +5 ms shift; mass is kept."""
    n_mel = 40
    centres_ms = 20.0 * np.arange(n_mel // 2)
    for i in range(n_mel - 1):  # the last odd frame loses the half past the end
        impulse = np.zeros(n_mel)
        impulse[i] = 1.0
        pooled = pool_to_encoder_grid(impulse)
        assert pooled.shape == (n_mel // 2,) and pooled.sum() == pytest.approx(1.0)
        assert (pooled * centres_ms).sum() == pytest.approx(10.0 * i)
    even = np.zeros(n_mel)
    even[14] = 1.0
    assert np.flatnonzero(pool_to_encoder_grid(even)).tolist() == [7]  # 140 ms: frame 7 only
    np.testing.assert_allclose(pool_to_encoder_grid(np.ones((2, 5))), [[1.5, 2, 1.5]] * 2)
    assert methods.pool_to_encoder_grid is pool_to_encoder_grid  # every method pools alike


def test_rise_grid_respects_budget_batches_and_valid_frames(tiny, mel):
    ids, positions, targets = teacher_forcing(PROMPT, CONTENT)
    batches = []
    encode = tiny.encode

    def counting(x):
        batches.append(x.shape[0])
        return encode(x)

    tiny.encode = counting
    try:
        res = methods.rise_grid_saliency(
            tiny, mel, ids, positions, targets, 100, budget=10, batch_size=4, seed=3
        )
    finally:
        del tiny.encode
    assert batches == [1, 4, 4, 2] and res.passes == 11  # one clean pass + the budget
    assert res.masks.shape == (10, 8, 10)  # 80 bins / 10, 100 mel frames / 10
    assert res.saliency.shape == (4, 1500)
    assert np.abs(res.saliency[:, :50]).sum() > 0
    assert np.all(res.saliency[:, 51:] == 0)  # only the valid frames are occluded
    # (frame 50 gets half of mel frame 99: centred pooling)
    again = methods.rise_grid_saliency(
        tiny, mel, ids, positions, targets, 100, budget=10, batch_size=5, seed=3
    )
    np.testing.assert_allclose(again.saliency, res.saliency, rtol=1e-5, atol=1e-9)
    other = methods.rise_grid_saliency(
        tiny, mel, ids, positions, targets, 100, budget=10, batch_size=5, seed=4
    )
    assert not np.allclose(other.saliency, res.saliency)
    with pytest.raises(ValueError, match="occlude_prob"):
        methods.rise_grid_saliency(tiny, mel, ids, positions, targets, 100, occlude_prob=1.0)


class AttentionIsSaliency:
    """A synthetic decoder whose log-prob is linear in the attention-weighted encoder frames.

    ``encode``: per 20 ms frame, ``h_j = W_e m_j`` (``m_j``: the two mel frames' bins).
    ``decode``: token ``k`` attends with fixed weights ``a_kj`` (independent of ``h``), and
    its logits are ``V sum_j a_kj h_j``. So ``d log p_k / d h_j = a_kj V^T (e_k - p_k)``,
    whose norm is ``a_kj`` times a per-token constant: attention *is* the saliency.
    """

    def __init__(self, tokens=3, frames=1500, heads=2, vocab=16, dim=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.attn = torch.softmax(torch.randn(heads, tokens, frames, generator=g), -1)
        self.w_enc = torch.randn(160, dim, generator=g, dtype=torch.float64)
        self.v = torch.randn(dim, vocab, generator=g, dtype=torch.float64)

    def encode(self, mel):
        b, bins, n = mel.shape
        pairs = mel.reshape(b, bins, n // 2, 2).permute(0, 2, 1, 3).reshape(b, n // 2, -1)
        return pairs @ self.w_enc

    def decode(self, encoder, input_ids, positions, targets, *, attentions=False):
        a = self.attn.to(encoder.dtype)  # (head, token, frame)
        context = torch.einsum("tj,bjd->btd", a.mean(0), encoder)
        logprob = torch.log_softmax(context @ self.v, -1)
        tgt = torch.as_tensor(targets)
        picked = logprob.gather(-1, tgt[None, :, None].expand(encoder.shape[0], -1, 1))[..., 0]
        cross = a[None, None].expand(1, encoder.shape[0], -1, -1, -1) if attentions else None
        return TokenPass(encoder, picked, cross)


def test_synthetic_model_whose_attention_is_its_saliency_gives_r_1():
    model = AttentionIsSaliency()
    mel = torch.randn(1, 80, 3000, dtype=torch.float64)
    ids, positions, targets = teacher_forcing([0], [1, 2, 3])
    res = methods.gradient_saliency(model, mel, ids, positions, targets, encoder="grad_norm")
    table = correlate.correlation_rows(
        "u", ["a", "b", "c"], res.cross, {"encoder_output": res.encoder_output}, 120
    )
    assert len(table) == 3 * (2 + 1 + 1)  # tokens x (heads + layer mean + all)
    layer_mean = table[table["head"] == "mean"]["pearson_r"]
    overall = table[table["layer"] == "all"]["pearson_r"]
    np.testing.assert_allclose(layer_mean, 1.0, atol=1e-9)
    np.testing.assert_allclose(overall, 1.0, atol=1e-9)
    single = table[~table["head"].isin(["mean", "all"])]["pearson_r"]
    assert single.max() < 0.95  # one head alone is not the decoder's attention


def test_pearson_r_matches_numpy_and_flags_constant_maps():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 50)), rng.standard_normal(50)
    expected = [np.corrcoef(row, b)[0, 1] for row in a]
    np.testing.assert_allclose(correlate.pearson_r(a, b), expected, rtol=1e-12)
    assert np.isnan(correlate.pearson_r(np.full(50, 3.0), b))
    assert np.isnan(correlate.pearson_r(b[:1], b[:1]))


def test_correlations_use_valid_frames_only():
    rng = np.random.default_rng(0)
    n_valid, n_total = 40, 100
    cross = rng.random((2, 3, 4, n_total))
    sal = rng.random((4, n_total))
    rows = correlate.correlation_rows("u", list("abcd"), cross, {"m": sal}, n_valid)
    spoiled_cross, spoiled_sal = cross.copy(), sal.copy()
    spoiled_cross[..., n_valid:] = 1e6 * rng.random((2, 3, 4, n_total - n_valid))
    spoiled_sal[:, n_valid:] = 1e6
    spoiled = correlate.correlation_rows(
        "u", list("abcd"), spoiled_cross, {"m": spoiled_sal}, n_valid
    )
    pd.testing.assert_frame_equal(rows, spoiled)
    one = rows[(rows["layer"] == "1") & (rows["head"] == "2") & (rows["token_index"] == 3)]
    expected = np.corrcoef(cross[1, 2, 3, :n_valid], sal[3, :n_valid])[0, 1]
    assert one["pearson_r"].item() == pytest.approx(expected, rel=1e-12)
    overall = rows[(rows["layer"] == "all") & (rows["token_index"] == 0)]["pearson_r"].item()
    mean_map = cross[:, :, 0, :n_valid].mean((0, 1))
    assert overall == pytest.approx(np.corrcoef(mean_map, sal[0, :n_valid])[0, 1], rel=1e-12)
    assert list(rows.columns) == correlate.COLUMNS
    assert len(rows) == 4 * (2 * 3 + 2 + 1)


def test_summary_compares_best_head_layer_average_and_global():
    rows = []
    for utt in ("u1", "u2"):
        for token in range(3):
            for layer, head, r in [
                ("0", "0", 0.1),
                ("0", "1", 0.8),
                ("1", "0", 0.3),
                ("1", "1", 0.2),
            ]:
                rows.append([utt, token, "t", layer, head, "gxi", r])
            rows += [
                [utt, token, "t", "0", "mean", "gxi", 0.5],
                [utt, token, "t", "1", "mean", "gxi", 0.4],
            ]
            rows.append([utt, token, "t", "all", "all", "gxi", 0.6])
    summary = correlate.summarise(pd.DataFrame(rows, columns=correlate.COLUMNS)).set_index(
        ["level", "statistic"]
    )
    assert sorted(summary.reset_index().columns) == sorted(correlate.SUMMARY_COLUMNS)
    assert summary.loc[("head", "best_in_sample"), ["layer", "head"]].tolist() == ["0", "1"]
    assert summary.loc[("head", "best_in_sample"), "mean_r"] == pytest.approx(0.8)
    # both halves choose head 0.1; each is measured on the other half's tokens
    assert summary.loc[("head", "best_crossfit"), ["layer", "head"]].tolist() == ["0", "1"]
    assert summary.loc[("head", "best_crossfit"), "mean_r"] == pytest.approx(0.8)
    assert summary.loc[("head", "best_crossfit"), "n_tokens"] == 6
    assert summary.loc[("head", "mean"), "mean_r"] == pytest.approx(0.35)
    assert summary.loc[("layer", "best_in_sample"), "layer"] == "0"
    assert summary.loc[("layer", "mean"), "mean_r"] == pytest.approx(0.45)
    assert summary.loc[("all", "global"), "mean_r"] == pytest.approx(0.6)
    assert summary.loc[("all", "global"), "n_tokens"] == 6
    assert (summary["n_utterances"] == 2).all()


def test_crossfit_best_head_of_pure_noise_maps_is_about_zero():
    """Attention and saliency independent: every head's true r is 0. Chosen and measured on
    the same tokens, the best of 24 heads looks positive; cross-fitted, it does not."""
    rng = np.random.default_rng(0)
    in_sample, crossfit, layer_in, layer_cf = [], [], [], []
    for _ in range(12):
        tables = [
            correlate.correlation_rows(
                f"u{u:02d}",
                list("abcd"),
                rng.random((4, 6, 4, 30)),  # (layer, head, token, frame)
                {"noise": rng.random((4, 30))},
                30,
            )
            for u in range(10)
        ]
        summary = correlate.summarise(pd.concat(tables, ignore_index=True))
        summary = summary.set_index(["level", "statistic"])["mean_r"]
        in_sample.append(summary[("head", "best_in_sample")])
        crossfit.append(summary[("head", "best_crossfit")])
        layer_in.append(summary[("layer", "best_in_sample")])
        layer_cf.append(summary[("layer", "best_crossfit")])
    assert abs(np.mean(crossfit)) < 0.02  # sd of one draw's cross-fitted r: about 0.04
    assert np.mean(in_sample) > 0.04 and np.mean(in_sample) - np.mean(crossfit) > 0.03
    assert np.mean(np.greater(in_sample, crossfit)) >= 0.75
    assert np.mean(layer_in) > np.mean(layer_cf)
    assert abs(np.mean(layer_cf)) < 0.03


def test_crossfit_needs_two_utterances():
    rows = correlate.correlation_rows(
        "u",
        list("ab"),
        np.random.default_rng(0).random((2, 2, 2, 20)),
        {"m": np.random.default_rng(1).random((2, 20))},
        20,
    )
    summary = correlate.summarise(rows).set_index(["level", "statistic"])
    assert np.isnan(summary.loc[("head", "best_crossfit"), "mean_r"])
    assert np.isfinite(summary.loc[("head", "best_in_sample"), "mean_r"])


SETTINGS = {
    "transcript": "reference",
    "languages": ["en*"],
    "max_utterances": 2,
    "methods": ["gradient_x_input", "spes", "rise_grid", "encoder_output"],
    "gradient_sign": "absolute",
    "encoder_saliency": "grad_x_output",
    "grad_batch": 4,
    "spes": {"n_masks": 6, "n_segments": [20, 40], "batch_size": 3, "seed": 1},
    "rise_grid": {
        "budget": 4,
        "batch_size": 2,
        "patch_frames": 10,
        "patch_bins": 10,
        "occlude_prob": 0.5,
        "seed": 0,
    },
}


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("transcript", "oracle", "saliency.transcript"),
        ("methods", ["gradient_x_input", "lime"], "saliency.methods"),
        ("gradient_sign", "both", "saliency.gradient_sign"),
        ("grad_batch", 0, "saliency.grad_batch"),
        ("padding", "pad10", "saliency.padding"),
        ("rise_grid", {**SETTINGS["rise_grid"], "budget": 0}, "saliency.rise_grid.budget"),
        (
            "rise_grid",
            {**SETTINGS["rise_grid"], "occlude_prob": 1.5},
            "saliency.rise_grid.occlude_prob",
        ),
        ("spes", {**SETTINGS["spes"], "p": 1.0}, "saliency.spes.p"),
        ("spes", {**SETTINGS["spes"], "n_segments": [0]}, "saliency.spes.n_segments"),
    ],
)
def test_bad_settings_name_the_key(key, value, named):
    with pytest.raises(ConfigError, match=f"config key {named}"):
        check_settings({**SETTINGS, key: value})
    config = {"corpora": {"c": {"kind": "synthetic"}}, "saliency": {key: value}}
    with pytest.raises(ConfigError, match=f"config key {named}"):
        check_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")


def test_schema_accepts_the_settings():
    config = {"corpora": {"c": {"kind": "synthetic"}}, "saliency": SETTINGS}
    check_config(config, REPO / "workflow" / "schemas" / "config.schema.yaml")
    checked = check_settings(SETTINGS)
    for key, value in SETTINGS.items():
        expected = {**checked[key], **value} if isinstance(value, dict) else value
        assert checked[key] == expected
    assert checked["padding"] is None  # the model's own (pad30 for Whisper)
    assert checked["spes"]["p"] == 0.5 and checked["spes"]["n_segments"] == [20, 40]


def test_select_utterances_filters_languages_and_names_the_file(tmp_path):
    tsv = tmp_path / "utterances.tsv"
    pd.DataFrame(
        {
            "utterance_id": ["a", "b", "c", "d"],
            "audio": ["a.wav", "b.wav", "c.wav", "d.wav"],
            "language": ["tr", "en-us", "en-gb", "en-us"],
            "text": ["x", "y", "z", "w"],
        }
    ).to_csv(tsv, sep="\t", index=False)
    assert select_utterances(tsv, ["en*"], 2)["utterance_id"].tolist() == ["b", "c"]
    assert select_utterances(tsv, ["en-us", "tr"], None)["utterance_id"].tolist() == ["a", "b", "d"]
    # max_utterances are taken in turn from each language: tr's one utterance is not crowded out
    assert select_utterances(tsv, ["en-us", "tr"], 2)["utterance_id"].tolist() == ["a", "b"]
    # null: the languages the model knows (here an English-only model)
    english_only = lambda code: code.startswith("en")  # noqa: E731
    assert select_utterances(tsv, None, 3, english_only)["utterance_id"].tolist() == ["b", "c", "d"]
    with pytest.raises(ValueError, match=r"utterances.tsv.*saliency.languages"):
        select_utterances(tsv, ["fr*"], None)
    pd.DataFrame({"utterance_id": ["a"], "audio": ["a.wav"]}).to_csv(tsv, sep="\t", index=False)
    with pytest.raises(
        ValueError, match=r"utterances.tsv: missing column\(s\) \['language', 'text'\]"
    ):
        select_utterances(tsv, ["en*"], None)
