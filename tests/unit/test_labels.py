"""Segments -> frame labels (frame-centre rule), boundary/silence policies, caps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speechlens import labels

PHONES = ["a", "b", "c", "sil"]


@st.composite
def utterances(draw, max_utts=3):
    """Tiling segments for a few utterances (some boundaries on a 10 ms grid) + durations."""
    rows, durations = [], {}
    for u in range(draw(st.integers(1, max_utts))):
        duration = draw(st.floats(0.05, 1.5))
        cuts = draw(
            st.lists(
                st.one_of(
                    st.floats(0.001, duration - 0.001),
                    # boundaries exactly on frame centres of both grids and on grid edges
                    st.integers(0, int(duration * 100)).map(lambda i: (i + 0.5) * 0.01),
                    st.integers(0, int(duration * 50)).map(lambda i: (i + 0.5) * 0.02),
                    st.integers(1, int(duration * 100)).map(lambda i: i * 0.01),
                ),
                max_size=12,
                unique=True,
            )
        )
        edges = sorted({0.0, duration, *[c for c in cuts if 0 < c < duration]})
        for start, end in zip(edges[:-1], edges[1:], strict=True):
            rows.append((f"u{u}", "phone", start, end, draw(st.sampled_from(PHONES))))
        durations[f"u{u}"] = duration
    seg = pd.DataFrame(rows, columns=["utterance_id", "tier", "start_s", "end_s", "label"])
    return seg, durations


def grid(durations: dict, hop: float, extra: int = 2):
    """Frame centres (i + 0.5) * hop per utterance, running ``extra`` frames past the end."""
    ids, times = [], []
    for u, d in durations.items():
        n = int(np.ceil(d / hop)) + extra
        ids += [u] * n
        times.append((np.arange(n) + 0.5) * hop)
    return np.asarray(ids, dtype=object), np.concatenate(times)


def brute_force(ids, times, seg):
    """Reference: the row of the segment holding each centre (start <= t < end), else -1."""
    out = np.full(len(times), -1)
    for i, (u, t) in enumerate(zip(ids, times, strict=True)):
        hit = seg.index[(seg["utterance_id"] == u) & (seg["start_s"] <= t) & (t < seg["end_s"])]
        assert len(hit) <= 1
        if len(hit):
            out[i] = hit[0]
    return out


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(data=utterances(), hop=st.sampled_from([0.01, 0.02]))
def test_every_frame_gets_the_segment_holding_its_centre(data, hop):
    seg, durations = data
    seg = labels.tier_segments(seg, "phone")
    ids, times = grid(durations, hop)
    got = labels.assign_segments(ids, times, seg)
    np.testing.assert_array_equal(got, brute_force(ids, times, seg))
    # no off-by-one at utterance ends: the frames past the audio are unlabelled, the last
    # frame whose centre is inside the audio is labelled (by the last segment when that
    # segment starts before the centre)
    for u, d in durations.items():
        mine = ids == u
        inside = times[mine] < d
        assert (got[mine][~inside] == -1).all()
        assert got[mine][inside][-1] >= 0
        last = seg.index[seg["utterance_id"] == u][-1]
        if seg.loc[last, "start_s"] <= times[mine][inside][-1]:
            assert got[mine][inside][-1] == last


@FAST
@given(data=utterances(), hop=st.sampled_from([0.01, 0.02]), ms=st.sampled_from([0, 5, 10, 25]))
def test_boundary_policy_drops_exactly_the_frames_near_interior_boundaries(data, hop, ms):
    seg, durations = data
    seg = labels.tier_segments(seg, "phone")
    ids, times = grid(durations, hop)
    table = labels.frame_table(ids, times, seg, boundary_ms=ms)
    expected = []
    for i, s in enumerate(brute_force(ids, times, seg)):
        if s < 0:
            continue
        row = seg.loc[s]
        interior = [
            e
            for e, is_b in ((row.start_s, row.start_boundary), (row.end_s, row.end_boundary))
            if is_b
        ]
        if all(abs(times[i] - e) >= ms / 1000 for e in interior):
            expected.append(i)
    assert table["frame"].tolist() == expected
    assert (table["label"].to_numpy() == seg["label"].to_numpy()[table["segment"]]).all()


def test_utterance_edges_are_not_boundaries_and_silence_policy():
    seg = pd.DataFrame(
        {
            "utterance_id": ["u"] * 3,
            "tier": "phone",
            "start_s": [0.0, 0.1, 0.3],
            "end_s": [0.1, 0.3, 0.4],
            "label": ["sil", "a", "sil"],
        }
    )
    seg = labels.tier_segments(seg, "phone")
    assert seg["start_boundary"].tolist() == [False, True, True]
    assert seg["end_boundary"].tolist() == [True, True, False]
    ids, times = grid({"u": 0.4}, 0.01, extra=0)
    kept = labels.frame_table(ids, times, seg, boundary_ms=20)
    # first frame (5 ms from the utterance start) is kept; 95 ms is 5 ms from a boundary
    assert kept["frame"].iloc[0] == 0 and 9 not in set(kept["frame"])
    assert kept["frame"].iloc[-1] == 39
    no_sil = labels.frame_table(ids, times, seg, silence="drop")
    assert set(no_sil["label"]) == {"a"} and len(no_sil) == 20
    with pytest.raises(ValueError, match="silence"):
        labels.frame_table(ids, times, seg, silence="maybe")


def _long_segments(n_utts=6, seed=0):
    """Segments of 40-120 ms (every segment holds centres of both grids)."""
    rng = np.random.default_rng(seed)
    rows, durations = [], {}
    for u in range(n_utts):
        t = 0.0
        for _ in range(20):
            d = float(np.round(rng.uniform(0.04, 0.12), 3))
            rows.append((f"u{u}", "phone", t, t + d, str(rng.choice(["a", "b", "c"]))))
            t = round(t + d, 3)
        durations[f"u{u}"] = t
    seg = pd.DataFrame(rows, columns=["utterance_id", "tier", "start_s", "end_s", "label"])
    return labels.tier_segments(seg, "phone"), durations


def test_cap_is_per_class_one_frame_per_segment_and_shared_across_grids():
    seg, durations = _long_segments()
    picked = {}
    for hop in (0.01, 0.02):
        ids, times = grid(durations, hop)
        table = labels.frame_table(ids, times, seg)
        capped = labels.cap_units(table, 15, seed=3, n_units=len(seg))
        counts = capped["label"].value_counts()
        assert (counts == 15).all() and set(counts.index) == {"a", "b", "c"}
        assert capped["segment"].is_unique  # round-robin: one frame per segment first
        assert capped["frame"].is_monotonic_increasing
        # the chosen frame is the one nearest its segment centre
        nearest = table.sort_values("centre_distance_s").groupby("segment")["frame"].first()
        assert (capped.set_index("segment")["frame"] == nearest.loc[capped["segment"]]).all()
        picked[hop] = set(capped["segment"])
    assert picked[0.01] == picked[0.02]  # the same segments on 10 ms and 20 ms grids
    ids, times = grid(durations, 0.01)
    table = labels.frame_table(ids, times, seg)
    big = labels.cap_units(table, 10_000, seed=3, n_units=len(seg))
    assert len(big) == len(table)
    again = labels.cap_units(table, 15, seed=3, n_units=len(seg))
    assert again.equals(labels.cap_units(table, 15, seed=3, n_units=len(seg)))
    assert not again.equals(labels.cap_units(table, 15, seed=4, n_units=len(seg)))
    assert labels.cap_units(table, None, seed=0, n_units=len(seg)) is table


def test_rare_class_takes_more_frames_per_segment_round_robin():
    seg, durations = _long_segments(n_utts=1)
    ids, times = grid(durations, 0.01)
    table = labels.frame_table(ids, times, seg)
    n_seg = table.groupby("label")["segment"].nunique()
    cap = int(n_seg.min()) + 3
    capped = labels.cap_units(table, cap, seed=0, n_units=len(seg))
    rare = n_seg.idxmin()
    per_seg = capped[capped["label"] == rare].groupby("segment").size()
    assert per_seg.sum() == cap and per_seg.max() - per_seg.min() <= 1
