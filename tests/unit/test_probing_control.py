"""The control task (Hewitt & Liang 2019, adapted to frames): a seeded random function of a
phone's slot (word type, position in the word), never of the phone itself."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from speechlens import probing, store
from speechlens.labels import tier_segments
from speechlens.probing import control as ctl

HOP = 0.02
PHONES = [f"p{i}" for i in range(8)]
FAST = {"mlp_max_iter": 60}


def _lexicon(rng, n_words=40, length=3):
    """``n_words`` distinct words of ``length`` phones each (name -> phones)."""
    words = {}
    while len(words) < n_words:
        phones = tuple(rng.choice(PHONES, size=length))
        words.setdefault("".join(phones), phones)
    return words


def _corpus(rng, n_speakers=16, n_utts=8, n_words=10):
    """Utterances of words from one lexicon (every speaker says every word type), with a
    phone tier and a word tier that tile each utterance."""
    lexicon = _lexicon(rng)
    names = sorted(lexicon)
    utts, segs = [], []
    for s in range(n_speakers):
        for k in range(n_utts):
            uid, t = f"s{s:02d}_{k}", 0.0
            for w in rng.choice(names, size=n_words):
                start = t
                for p in lexicon[w]:
                    d = round(float(rng.uniform(0.04, 0.1)), 3)
                    segs.append((uid, "phone", t, round(t + d, 3), p))
                    t = round(t + d, 3)
                segs.append((uid, "word", start, t, w))
            utts.append((uid, f"a/{uid}.wav", f"s{s:02d}", "xx", "f", f"text {k}", t, 16000))
    cols = ["utterance_id", "audio", "speaker", "language", "gender", "text", "duration_s"]
    utterances = pd.DataFrame(utts, columns=[*cols, "sample_rate"])
    segments = pd.DataFrame(segs, columns=["utterance_id", "tier", "start_s", "end_s", "label"])
    return utterances, segments


def _frame_store(path, utterances):
    """A store with the utterances' 20 ms frame grid (features unused: one zero feature)."""
    times = [(np.arange(int(d / HOP)) + 0.5) * HOP for d in utterances["duration_s"]]
    group = store.create(
        path,
        num_layers=1,
        hidden_size=1,
        utterance_ids=utterances["utterance_id"].tolist(),
        frame_counts=[len(t) for t in times],
        frame_times=times,
        attrs={},
        dtype="float32",
    )
    store.write_block(group, 0, [np.zeros((1, len(t), 1), np.float32) for t in times])
    store.finish(group)
    return store.open_store(path)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """(utterances, segments, sample of the phone task with the default control, slot of
    every sample)."""
    rng = np.random.default_rng(0)
    utterances, segments = _corpus(rng)
    ds = _frame_store(tmp_path_factory.mktemp("control") / "f.zarr", utterances)
    task = probing.resolve_task(
        {
            "level": "frame",
            "source": "phone",
            "group_by": "speaker",
            "control": True,
            "max_per_class": 400,
        }  # fmt: skip
    )
    sample = probing.draw_samples(ds, utterances, segments, task)
    units = tier_segments(segments, "phone")
    slot = ctl.slot_parts(units, segments, "word")[sample.unit]
    return utterances, segments, sample, slot, task


def _onehot(values, sigma, seed):
    """One-hot code of ``values`` + Gaussian noise (sd ``sigma``), as (1 layer, n, dim)."""
    rng = np.random.default_rng(seed)
    _, inverse = np.unique(values, return_inverse=True)
    X = np.eye(inverse.max() + 1)[inverse] + rng.normal(0, sigma, (len(values), inverse.max() + 1))
    return X.astype(np.float32)[None]


def _means(toy, X):
    _, _, sample, _, task = toy
    data = probing.TaskData.from_sample(sample, X)
    table, _ = probing.probe_arrays(data, task, FAST | {"knn_k": 10})
    rows = table[(table.fold == "mean") & (table.metric == "accuracy")]
    return rows.set_index("probe")["value"]


# ----------------------------------------------------------------------------- definition


def test_slots_are_word_type_and_position():
    seg = pd.DataFrame(
        [
            ("u", "phone", 0.0, 0.1, "k"), ("u", "phone", 0.1, 0.2, "a"),
            ("u", "phone", 0.2, 0.3, "t"), ("u", "phone", 0.3, 0.4, "sil"),
            ("u", "phone", 0.4, 0.5, "b"), ("u", "phone", 0.5, 0.6, "a"),
            ("u", "phone", 0.6, 0.7, "t"), ("u", "phone", 0.7, 0.8, "a"),
            ("v", "phone", 0.0, 0.1, "k"), ("v", "phone", 0.1, 0.2, "a"),
            ("v", "phone", 0.2, 0.3, "t"),
            ("u", "word", 0.0, 0.3, "cat"), ("u", "word", 0.3, 0.4, "sil"),
            ("u", "word", 0.4, 0.7, "bat"), ("v", "word", 0.0, 0.3, "cat"),
        ],
        columns=["utterance_id", "tier", "start_s", "end_s", "label"],
    )  # fmt: skip
    units = tier_segments(seg, "phone")
    slots = dict(
        zip(
            zip(units["utterance_id"], units["start_s"], strict=True),
            ctl.slot_parts(units, seg, "word"),
            strict=True,
        )
    )
    assert [slots["u", t] for t in (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)] == [
        "cat#0", "cat#1", "cat#2", "sil#0", "bat#0", "bat#1", "bat#2", ctl.NO_SEGMENT
    ]  # fmt: skip
    assert [slots["v", t] for t in (0.0, 0.1, 0.2)] == ["cat#0", "cat#1", "cat#2"]


def test_control_classes_are_drawn_per_identity_from_the_target_distribution():
    dist = {"a": 70, "b": 20, "c": 10, "never": 0}
    ids = np.asarray([f"w{i}#0" for i in range(4000)])
    drawn = ctl.control_labels(ids, dist, seed=0)
    share = pd.Series(drawn).value_counts(normalize=True)
    assert "never" not in share.index
    assert share["a"] == pytest.approx(0.7, abs=0.03) and share["c"] == pytest.approx(0.1, abs=0.02)
    # one identity, one class; the draw of an identity does not depend on the others
    twice = ctl.control_labels(np.concatenate([ids[:10], ids[:10]]), dist, seed=0)
    np.testing.assert_array_equal(twice[:10], twice[10:])
    np.testing.assert_array_equal(twice[:10], drawn[:10])
    assert (ctl.control_labels(ids, dist, seed=1) != drawn).mean() > 0.3


def test_same_phone_in_different_slots_gets_different_control_labels(toy):
    _, _, sample, slot, _ = toy
    frame = pd.DataFrame({"phone": sample.label, "slot": slot, "control": sample.control})
    # a function of the slot: every slot has one control label ...
    assert (frame.groupby("slot")["control"].nunique() == 1).all()
    # ... and not of the phone: each phone's slots carry several control labels
    per_phone = frame.groupby("phone")["control"].nunique()
    assert (per_phone >= 3).all(), per_phone
    # classes come from the target distribution; every test slot was seen in training
    assert set(frame["control"]) <= set(frame["phone"])
    assert sample.info["control"]["test_identities_seen_in_training"] == [1.0] * 5
    assert sample.info["control"]["by"] == ["word"]


@pytest.fixture(scope="module")
def phone_coded(toy):
    return _means(toy, _onehot(toy[2].label, 0.3, seed=1))


@pytest.fixture(scope="module")
def slot_coded(toy):
    return _means(toy, _onehot(toy[3], 0.1, seed=2))


@pytest.mark.parametrize("probe", ["linear", "knn", "mlp"])
def test_phone_code_is_selective(toy, phone_coded, probe):
    """One-hot(phone) + noise: the phone is read out, the slot's control is not (its
    accuracy stays near the control's majority share and below what knowing the phone
    allows), so selectivity is large."""
    _, _, sample, _, _ = toy
    control = pd.Series(sample.control)
    majority = control.value_counts(normalize=True).iloc[0]
    by_phone = pd.DataFrame({"p": sample.label, "c": sample.control}).groupby("p")["c"]
    knowing_phone = by_phone.agg(lambda c: c.value_counts().iloc[0]).sum() / len(control)
    assert phone_coded[probe] > 0.9
    assert phone_coded[f"{probe}_control"] < min(majority + 0.05, knowing_phone + 0.02)
    assert phone_coded[f"{probe}_selectivity"] > 0.6


@pytest.mark.parametrize("probe", ["linear", "knn", "mlp"])
def test_slot_code_solves_the_control(slot_coded, probe):
    """One-hot(slot) + noise: phone and control are both functions of the slot, so the
    control is solved as well as the task and selectivity is small."""
    assert slot_coded[f"{probe}_control"] > 0.7
    assert abs(slot_coded[f"{probe}_selectivity"]) < 0.05


# ----------------------------------------------------------------------------- config


def test_control_settings_resolve_and_refuse_the_target():
    frame = {"level": "frame", "source": "phone"}
    assert probing.resolve_task(frame | {"control": True}).control.by == ("word",)
    assert probing.resolve_task(frame | {"control": False}).control is None
    by = probing.resolve_task(frame | {"control": {"by": ["word", "speaker"]}}).control.by
    assert by == ("word", "speaker")
    utt = {"level": "utterance", "source": "gender", "control": True}
    assert probing.resolve_task(utt).control.by == ("text",)
    with pytest.raises(probing.ProbingError, match=r"probing.tasks.ph.control.by \['phone'\]"):
        probing.check_tasks({"ph": frame | {"control": {"by": ["phone"]}}})
    with pytest.raises(probing.ProbingError, match="probing.tasks.w.control.by"):
        probing.check_tasks({"w": {"level": "frame", "source": "word", "control": True}})


def test_a_corpus_without_the_control_tier_is_named(toy):
    utterances, segments, *_ = toy
    phones_only = segments[segments["tier"] == "phone"]
    task = {"level": "frame", "source": "phone", "control": True}
    with pytest.raises(probing.ProbingError, match=r"probing.tasks.ph.control.by: \['word'\]"):
        probing.check_task_sources(task, "ph", utterances, phones_only)
    probing.check_task_sources(task, "ph", utterances, segments)
    utt = {"level": "utterance", "source": "gender", "control": {"by": ["word"]}}
    with pytest.raises(probing.ProbingError, match="not columns of utterances.tsv"):
        probing.check_task_sources(utt, "g", utterances, segments)


def test_utterance_control_is_a_function_of_the_text(toy, tmp_path):
    utterances, segments, *_ = toy
    ds = _frame_store(tmp_path / "u.zarr", utterances)
    task = {"level": "utterance", "source": "speaker", "control": True}
    sample = probing.utterance_samples(ds, utterances, task)
    text = (
        utterances.set_index("utterance_id")
        .loc[[str(u) for u in ds["utterance_id"].values], "text"]
        .to_numpy()[sample.index]
    )
    frame = pd.DataFrame({"text": text, "control": sample.control})
    assert (frame.groupby("text")["control"].nunique() == 1).all()
    assert frame["control"].nunique() > 1
