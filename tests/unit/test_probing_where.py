"""Probing tasks restricted to some utterances (``where``), e.g. the phones of one language."""

from __future__ import annotations

import numpy as np
import pytest

from speechlens import probing, store
from tests.unit.test_probing import _load, corpus  # noqa: F401  (the fixture)


def _utterance_of_frames(corpus, index):  # noqa: F811
    ds = store.open_store(corpus / "features.zarr")
    ids = np.asarray([str(u) for u in ds["utterance_id"].values], dtype=object)
    return ids[ds["utterance_index"].values[index]]


def test_frame_task_keeps_only_the_matching_utterances(corpus):  # noqa: F811
    data, _, utterances = _load(corpus, level="frame", source="phone", group_by="speaker")
    only, _, _ = _load(
        corpus, level="frame", source="phone", group_by="speaker", where={"language": "yy"}
    )
    yy = set(utterances.loc[utterances["language"] == "yy", "speaker"])
    assert set(only.groups) == yy  # only yy speakers, in every fold
    assert 0 < only.info["eligible"] < data.info["eligible"]  # (both capped at 200 a class)
    both, _, _ = _load(
        corpus,
        level="frame",
        source="phone",
        group_by="speaker",
        where={"language": ["xx", "yy"]},
    )
    np.testing.assert_array_equal(both.y, data.y)
    np.testing.assert_array_equal(both.test_fold, data.test_fold)


def test_frame_samples_come_from_matching_utterances(corpus):  # noqa: F811
    from speechlens.corpora.contract import read_tables

    utterances, segments = read_tables(corpus / "utterances.tsv", corpus / "segments.tsv")
    task = probing.resolve_task(
        {"level": "frame", "source": "phone", "group_by": "speaker", "where": {"language": "xx"}}
    )
    ds = store.open_store(corpus / "features.zarr")
    picked = probing.frame_samples(ds, utterances, segments, task)
    uids = _utterance_of_frames(corpus, picked.index)
    language = utterances.set_index("utterance_id").loc[uids, "language"]
    assert set(language) == {"xx"}


def test_utterance_task_with_where(corpus):  # noqa: F811
    data, _, utterances = _load(
        corpus,
        level="utterance",
        source="gender",
        group_by="speaker",
        folds=3,  # 3 speakers of each gender in xx
        where={"language": "xx"},
    )
    assert len(data.y) == (utterances["language"] == "xx").sum() == 30
    assert all(g.startswith("xx_") for g in data.groups)


def test_bad_where_is_named(corpus):  # noqa: F811
    with pytest.raises(probing.ProbingError, match="'accent' is not a column"):
        _load(corpus, level="frame", source="phone", where={"accent": "x"})
    with pytest.raises(probing.ProbingError, match="matches no utterance"):
        _load(corpus, level="frame", source="phone", where={"language": "zz"})
    with pytest.raises(probing.ProbingError, match="use a mapping"):
        probing.resolve_task({"level": "frame", "source": "phone", "where": "en"})
