"""Head statistics and types on constructed attention maps (speechlens.attention.stats)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speechlens import schema
from speechlens.attention import settings as st
from speechlens.attention.stats import (
    METRICS,
    HeadStats,
    band_overlap,
    classify,
    classify_yang,
    renormalise,
    utterance_metrics,
)

THRESHOLDS = {"diagonal": 0.5, "vertical": 0.5}
W, F, RATE = 40.0, 0.05, 50.0  # band (ms), fraction, Hz (20 ms frames): +-2 frames


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


def stats_of(maps, n_valid=None, rate=RATE, classification="threshold", w=W) -> dict:
    """Corpus means of maps given as a list of (head, q, k) single-layer maps."""
    heads = maps[0].shape[0]
    acc = HeadStats(1, heads, diagonal_ms=w, vertical_fraction=F, frame_rate_hz=rate)
    for m, n in zip(maps, n_valid or [None] * len(maps), strict=True):
        acc.update(m[None], n)
    return acc.table(THRESHOLDS, classification)


def test_constructed_maps_get_the_right_type():
    n = 120
    maps = np.stack([np.eye(n), band(n, 1), column(n, 7), column(n, 0), uniform(n)])
    table = stats_of([maps])
    assert table["type"].tolist() == ["diagonal", "diagonal", "vertical", "vertical", "global"]
    assert set(table["classification"]) == {"threshold"}
    eye, _, col, _, uni = table.to_dict("records")
    assert eye["diagonality"] == pytest.approx(1.0)
    assert eye["entropy"] == pytest.approx(0.0, abs=1e-12)
    assert eye["entropy_norm"] == pytest.approx(0.0, abs=1e-12)
    assert eye["distance_ms"] == pytest.approx(20.0 / 3)  # within one 20 ms frame's span
    assert col["verticality"] == pytest.approx(1.0)
    # +-40 ms = +-2 frames of 20 ms: queries 5..9 have key 7 inside (edge frames: half)
    assert col["diagonality"] == pytest.approx((3 + 2 * 0.5) / n)
    assert uni["entropy"] == pytest.approx(math.log(n))
    assert uni["entropy_norm"] == pytest.approx(1.0)
    assert uni["verticality"] == pytest.approx(F)
    i = np.arange(n)
    inside = np.clip(2.5 - np.abs(i[:, None] - i[None, :]), 0, 1)  # frames' share of the band
    assert uni["diagonality"] == pytest.approx(inside.mean())
    dist = np.abs(i[:, None] - i).astype(float)
    dist[i, i] = 1 / 3
    assert uni["distance_ms"] == pytest.approx(dist.mean() * 20.0)
    assert (table["padding_mass"].abs() < 1e-12).all()


def test_band_overlap_counts_the_part_of_each_key_frame_inside():
    d = np.array([0, 1, 2, 3, -3])
    np.testing.assert_allclose(band_overlap(d, 2.0), [1, 1, 0.5, 0, 0])
    np.testing.assert_allclose(band_overlap(d, 2.5), [1, 1, 1, 0, 0])
    np.testing.assert_allclose(band_overlap(np.array([0, 1]), 0.25), [0.5, 0])


def test_diagonal_band_is_not_vertical_and_scattered_keys_are_not_either():
    n = 200
    rng = np.random.default_rng(0)
    scattered = np.zeros((n, n))
    scattered[np.arange(n), rng.permutation(n)] = 1.0  # each query its own single key
    table = stats_of([np.stack([band(n, 3), scattered])], w=60.0)
    assert table["verticality"].max() < 0.1
    assert table["type"].tolist() == ["diagonal", "global"]
    assert table["entropy"].iloc[1] == pytest.approx(0.0, abs=1e-12)


def upsample(a: np.ndarray) -> np.ndarray:
    """The same pattern at twice the frame rate: each query repeated, each key's mass split
    evenly over its two half-length frames."""
    return np.repeat(np.repeat(a, 2, axis=-2), 2, axis=-1) / 2


def test_the_same_pattern_at_50_hz_and_100_hz_gets_the_same_type_and_metrics():
    """Issue 14.4: the band is in ms and every metric is on the time axis."""
    rng = np.random.default_rng(3)
    n = 90  # 1.8 s at 50 Hz
    patterns = [
        band(n, 1),  # +-20 ms: diagonal
        band(n, 4),  # +-80 ms: wider than the band (60 ms), still mostly near
        0.7 * column(n, 11) + 0.3 * column(n, 60),  # vertical
        uniform(n),  # global
        rng.dirichlet(np.full(n, 0.2), size=n),  # scattered
        0.5 * np.roll(np.eye(n), 2, axis=1) + 0.5 * uniform(n),  # shifted diagonal + flat
    ]
    maps50 = np.stack(patterns)
    maps100 = upsample(maps50)
    lengths = [(n, 2 * n), (n - 17, 2 * (n - 17))]  # also with padding cropped
    for valid50, valid100 in lengths:
        for classification in ("threshold", "yang2020"):
            at50 = stats_of([maps50], [valid50], 50.0, classification, w=60.0)
            at100 = stats_of([maps100], [valid100], 100.0, classification, w=60.0)
            assert at50["type"].tolist() == at100["type"].tolist()
            for key in ("diagonality", "verticality", "distance_ms", *_yang()):
                np.testing.assert_allclose(at50[key], at100[key], rtol=1e-9, atol=1e-12)
    # frames, not ms (today's +-3 frames): the bands would differ by a factor of 2
    frames = stats_of([maps50], None, 50.0, w=3 * 20.0)["diagonality"]
    wrong = stats_of([maps100], None, 100.0, w=3 * 10.0)["diagonality"]
    assert np.abs(frames - wrong).max() > 0.1
    assert stats_of([maps50])["type"].iloc[0] == "diagonal"


def _yang():
    return ("yang_global", "yang_vertical", "yang_diagonal")


def yang_naive(maps, frame_ms):
    """Yang et al. (2020) eqs. 1-3 by loops, on the time axis (module docstring)."""
    g, v, d = [], [], []
    for a in maps:
        t = a.shape[0]
        h = lambda p: -sum(x * math.log(x) for x in p if x > 0)  # noqa: E731
        log_p = math.log(frame_ms / 1000)
        g.append(sum(h(a[q]) for q in range(t)) / t + log_p)
        v.append(-(h(a.mean(axis=0)) + log_p))
        total = 0.0
        for q in range(t):
            for k in range(t):
                total += (abs(q - k) if q != k else 1 / 3) * a[q, k]
        d.append(-total / t**2)
    return np.mean(g), np.mean(v), np.mean(d)


def test_yang_metrics_equal_the_papers_equations_averaged_over_utterances():
    rng = np.random.default_rng(5)
    utts = [rng.dirichlet(np.full(n, 0.4), size=(2, n)) for n in (12, 30, 7)]
    table = stats_of(utts, rate=100.0)
    for head in range(2):
        ref = yang_naive([u[head] for u in utts], 10.0)
        got = table.iloc[head][list(_yang())].to_numpy(float)
        np.testing.assert_allclose(got, ref, rtol=1e-10)


def test_yang_classification_ranks_each_metric_over_the_heads():
    # heads: 0 best G; 1 best V; 2 best D; 3 second in D but first... ties go to diagonal
    g = [0.9, 0.1, 0.2, 0.5]
    v = [0.1, 0.9, 0.2, 0.5]
    d = [0.1, 0.2, 0.9, 0.8]
    assert classify_yang(g, v, d).tolist() == ["global", "vertical", "diagonal", "diagonal"]
    # head 3: rank 2 in G (0.5 > 0.2, 0.1), rank 2 in V, rank 2 in D: a tie -> diagonal
    assert classify_yang([1, 0, 0, 0.5], [0, 1, 0, 0.5], [0, 0, 1, 0.5])[3] == "diagonal"
    # constructed maps: a band, a column and flat attention fall into their categories
    n = 80
    maps = np.stack([band(n, 1), column(n, 30), uniform(n)])
    table = stats_of([maps], classification="yang2020")
    assert table["type"].tolist() == ["diagonal", "vertical", "global"]
    assert set(table["classification"]) == {"yang2020"}


def naive(maps, n_valid):
    """Reference: loop over utterances and queries, pooled as documented."""
    out = {k: [] for k in ("diag", "ent", "ent_norm", "dist", "pad")}
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
            d = np.abs(np.arange(nv) - q).astype(float)
            out["diag"].append((p * np.clip(W / 20.0 + 0.5 - d, 0, 1)).sum())
            ent = -sum(x * math.log(x) for x in p if x > 0)
            out["ent"].append(ent)
            out["ent_norm"].append(ent / math.log(nv))
            d[q] = 1 / 3
            out["dist"].append((p * d).sum() * 1000 / RATE)
        colmass = np.mean(rows, axis=0)
        ranked, m = sorted(colmass)[::-1], F * nv
        top = sum(ranked[: math.floor(m)]) + ranked[math.floor(m)] * (m - math.floor(m))
        vert_num += top * len(rows)
        vert_den += len(rows)
    return {
        "diagonality": np.mean(out["diag"]),
        "entropy": np.mean(out["ent"]),
        "entropy_norm": np.mean(out["ent_norm"]),
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
    for key in set(METRICS) - {"padding_mass"}:
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
    sums = utterance_metrics(a[None], diagonal_ms=10.0, vertical_fraction=0.1, frame_ms=20.0)
    assert sums["queries"][0] == 9 and sums["diagonality"][0] == pytest.approx(9.0)


def test_classify_precedence_and_thresholds():
    types = classify([0.9, 0.2, 0.2, 0.6], [0.9, 0.7, 0.1, 0.1], {"diagonal": 0.5, "vertical": 0.6})
    assert types.tolist() == ["diagonal", "vertical", "global", "diagonal"]


def test_shape_mismatch_is_an_error():
    acc = HeadStats(2, 3, diagonal_ms=20, vertical_fraction=0.1, frame_rate_hz=50)
    with pytest.raises(ValueError, match=r"expected \(layer, head\) = \(2, 3\)"):
        acc.update(np.zeros((2, 2, 5, 5)))


@pytest.mark.parametrize(
    ("given", "key"),
    [
        ({"diagonal_ms": 0}, "attention.diagonal_ms"),
        ({"vertical_fraction": 0}, "attention.vertical_fraction"),
        ({"classification": "kmeans"}, "attention.classification"),
        ({"thresholds": {"vertical": 1.5}}, "attention.thresholds.vertical"),
        ({"thresholds": {"diagnal": 0.5}}, "attention.thresholds"),
        ({"ablation": {"mode": "shuffle"}}, "attention.ablation.mode"),
        ({"ablation": {"probe": "weighted_sum"}}, "attention.ablation.probe"),
        ({"ablation": {"layers": []}}, "attention.ablation.layers"),
        ({"diagonal_frames": 3}, "config key attention: unknown key(s) ['diagonal_frames']"),
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


def test_defaults_come_from_the_schema_the_workflow_validates_against():
    from snakemake.utils import validate

    from tests.conftest import REPO

    config = {"corpora": {"a": {"kind": "synthetic"}}}
    validate(config, str(REPO / "workflow" / "schemas" / "config.schema.yaml"))
    assert st.resolve({}) == config["attention"] == schema.defaults("attention")
    assert not hasattr(st, "DEFAULTS")
    assert st.resolve({})["ablation"]["random_draws"] >= 10  # issue 19: ranks need draws
    assert st.resolve({"ablation": {"random_draws": 4}})["ablation"]["mode"] == "zero"


def test_families_with_attention_follow_the_adapters_capabilities():
    from speechlens.models import ADAPTERS

    for family, adapter in ADAPTERS.items():
        assert st.has_self_attention(family) == ("self_attention" in adapter.capabilities)
    assert st.has_self_attention("whisper") and not st.has_self_attention("logmel")
    with pytest.raises(st.AttentionError, match="model family 'bert' unknown"):
        st.has_self_attention("bert")
