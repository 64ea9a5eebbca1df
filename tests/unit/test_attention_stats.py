"""Head statistics and types on constructed attention maps (speechlens.attention.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speechlens.attention import settings as st
from speechlens.attention.stats import HeadStats, classify, renormalise, utterance_metrics

THRESHOLDS = {"diagonal": 0.5, "vertical": 0.5}
K, F, RATE = 2, 0.05, 50.0  # frames, fraction, Hz (20 ms frames)


def band(n: int, width: int) -> np.ndarray:
    """Uniform attention over the keys within ``width`` frames of the query."""
    i = np.arange(n)
    a = (np.abs(i[:, None] - i[None, :]) <= width).astype(float)
    return a / a.sum(axis=1, keepdims=True)


def column(n: int, key: int) -> np.ndarray:
    a = np.zeros((n, n))
    a[:, key] = 1.0
    return a


def uniform(n: int) -> np.ndarray:
    return np.full((n, n), 1.0 / n)


def stats_of(maps, n_valid=None) -> dict:
    """Corpus means of maps given as a list of (head, q, k) single-layer maps."""
    heads = maps[0].shape[0]
    acc = HeadStats(1, heads, diagonal_frames=K, vertical_fraction=F, frame_rate_hz=RATE)
    for m, n in zip(maps, n_valid or [None] * len(maps), strict=True):
        acc.update(m[None], n)
    return acc.table(THRESHOLDS)


def test_constructed_maps_get_the_right_type():
    n = 120
    maps = np.stack([np.eye(n), band(n, 1), column(n, 7), column(n, 0), uniform(n)])
    table = stats_of([maps])
    assert table["type"].tolist() == ["diagonal", "diagonal", "vertical", "vertical", "global"]
    eye, _, col, _, uni = table.to_dict("records")
    assert eye["diagonality"] == pytest.approx(1.0)
    assert eye["entropy"] == pytest.approx(0.0, abs=1e-12)
    assert eye["distance_ms"] == pytest.approx(0.0)
    assert col["verticality"] == pytest.approx(1.0)
    assert col["diagonality"] == pytest.approx((K + 1 + K) / n)  # queries 5..9 see key 7
    assert uni["entropy"] == pytest.approx(math.log(n))
    m = math.ceil(F * n)
    assert uni["verticality"] == pytest.approx(m / n)
    assert uni["diagonality"] == pytest.approx(np.mean(band(n, K) > 0))
    # mean |q - k| over uniform keys, in ms
    i = np.arange(n)
    assert uni["distance_ms"] == pytest.approx(np.abs(i[:, None] - i).mean() * 20.0)
    assert (table["padding_mass"].abs() < 1e-12).all()


def test_diagonal_band_is_not_vertical_and_scattered_keys_are_not_either():
    n = 200
    rng = np.random.default_rng(0)
    scattered = np.zeros((n, n))
    scattered[np.arange(n), rng.permutation(n)] = 1.0  # each query its own single key
    table = stats_of([np.stack([band(n, 3), scattered])])
    assert table["verticality"].max() < 0.1
    assert table["type"].tolist() == ["diagonal", "global"]
    assert table["entropy"].iloc[1] == pytest.approx(0.0, abs=1e-12)


def naive(maps, n_valid):
    """Reference: loop over utterances and queries, pooled as documented."""
    out = {k: [] for k in ("diag", "ent", "dist", "pad")}
    vert_num = vert_den = 0.0
    for m, nv in zip(maps, n_valid, strict=True):
        a = m[:nv, :nv].astype(np.float64)
        rows = []
        for q in range(nv):
            s = a[q].sum()
            out["pad"].append(1 - s)
            if s <= 1e-6:
                continue
            p = a[q] / s
            rows.append(p)
            d = np.abs(np.arange(nv) - q)
            out["diag"].append(p[d <= K].sum())
            out["ent"].append(-sum(x * math.log(x) for x in p if x > 0))
            out["dist"].append((p * d).sum() * 1000 / RATE)
        colmass = np.mean(rows, axis=0)
        top = sorted(colmass)[::-1][: math.ceil(F * nv)]
        vert_num += sum(top) * len(rows)
        vert_den += len(rows)
    return {
        "diagonality": np.mean(out["diag"]),
        "entropy": np.mean(out["ent"]),
        "distance_ms": np.mean(out["dist"]),
        "padding_mass": np.mean(out["pad"]),
        "verticality": vert_num / vert_den,
    }


def test_streaming_equals_a_naive_batch_computation():
    rng = np.random.default_rng(1)
    maps, valid = [], []
    for n_full in (30, 57, 12, 80):
        nv = n_full - rng.integers(0, 8)
        raw = rng.dirichlet(np.full(n_full, 0.3), size=(2, n_full))  # (head, q, k) with padding
        maps.append(raw)
        valid.append(int(nv))
    table = stats_of(maps, valid)
    for head in range(2):
        ref = naive([m[head] for m in maps], valid)
        row = table.iloc[head]
        for key, value in ref.items():
            assert row[key] == pytest.approx(value, rel=1e-10, abs=1e-12), key
    assert table["padding_mass"].gt(0).all()


def test_padding_is_excluded_from_queries_and_keys():
    """A map whose padding carries mass gives the stats of the cropped renormalised map."""
    rng = np.random.default_rng(2)
    n, pad = 40, 25
    full = rng.dirichlet(np.full(n + pad, 0.5), size=(3, n + pad))
    full[:, :, n:] *= 5.0  # lots of mass on padding keys
    full /= full.sum(axis=-1, keepdims=True)
    full[:, n:, :] = np.eye(n + pad)[n:]  # padding queries: something very diagonal
    cropped = full[:, :n, :n] / full[:, :n, :n].sum(axis=-1, keepdims=True)
    a = stats_of([full], [n])
    b = stats_of([cropped])
    for key in ("diagonality", "verticality", "entropy", "distance_ms"):
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12)
    expected_pad = 1 - full[:, :n, :n].sum(axis=-1).mean(axis=-1)
    np.testing.assert_allclose(a["padding_mass"], expected_pad, rtol=1e-12)
    assert (b["padding_mass"].abs() < 1e-12).all()


def test_adapter_style_maps_already_cropped_are_renormalised():
    """Whisper pad30 maps arrive cropped to valid frames with rows summing below 1."""
    n = 50
    diag = np.eye(n) * 0.3  # 70 % of every row went to padding
    table = stats_of([diag[None]])
    assert table["diagonality"].iloc[0] == pytest.approx(1.0)
    assert table["padding_mass"].iloc[0] == pytest.approx(0.7)
    assert table["type"].iloc[0] == "diagonal"


def test_empty_rows_are_left_out():
    a = np.eye(10)
    a[3] = 0.0
    r, mass = renormalise(a)
    assert mass[3] == 0 and (r[3] == 0).all()
    sums = utterance_metrics(a[None], diagonal_frames=0, vertical_fraction=0.1, frame_ms=20.0)
    assert sums["queries"][0] == 9 and sums["diagonality"][0] == pytest.approx(9.0)


def test_classify_precedence_and_thresholds():
    types = classify([0.9, 0.2, 0.2, 0.6], [0.9, 0.7, 0.1, 0.1], {"diagonal": 0.5, "vertical": 0.6})
    assert types.tolist() == ["diagonal", "vertical", "global", "diagonal"]


def test_shape_mismatch_is_an_error():
    acc = HeadStats(2, 3, diagonal_frames=1, vertical_fraction=0.1, frame_rate_hz=50)
    with pytest.raises(ValueError, match=r"expected \(layer, head\) = \(2, 3\)"):
        acc.update(np.zeros((2, 2, 5, 5)))


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ({"diagonal_frames": -1}, "attention.diagonal_frames"),
        ({"vertical_fraction": 0}, "attention.vertical_fraction"),
        ({"thresholds": {"vertical": 1.5}}, "attention.thresholds.vertical"),
        ({"thresholds": {"diagnal": 0.5}}, "attention.thresholds"),
        ({"ablation": {"mode": "shuffle"}}, "attention.ablation.mode"),
        ({"ablation": {"probe": "weighted_sum"}}, "attention.ablation.probe"),
        ({"ablation": {"layers": []}}, "attention.ablation.layers"),
        ({"k": 3}, "config key attention: unknown key(s) ['k']"),
    ],
)
def test_bad_settings_name_the_key(given, key):
    with pytest.raises(st.AttentionError, match="config key") as info:
        st.resolve(given)
    assert key in str(info.value)


def test_probed_layers_count_from_the_end_and_name_the_key():
    assert st.probed_layers([-1, 0, 4], 5) == [0, 4]
    with pytest.raises(st.AttentionError, match="attention.ablation.layers: layer 5"):
        st.probed_layers([5], 5)


def test_schema_defaults_match_the_library():
    from snakemake.utils import validate

    from tests.conftest import REPO

    config = {"corpora": {"a": {"kind": "synthetic"}}}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert config["attention"] == st.DEFAULTS
    assert st.resolve(config["attention"]) == st.DEFAULTS


def test_families_with_attention():
    assert st.has_self_attention("whisper") and st.has_self_attention("wavlm")
    assert not st.has_self_attention("logmel")
    with pytest.raises(st.AttentionError, match="model family 'bert' unknown"):
        st.has_self_attention("bert")
