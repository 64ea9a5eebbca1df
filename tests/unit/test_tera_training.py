"""TERA training is a real optimisation (slow: a few minutes on 2 CPU cores).

On the default synthetic English corpus (8 speakers x 15 sentences), the default training must
bring the held-out L1 reconstruction loss well below the loss of predicting the per-channel
training mean, and the trained model's phone probe (linear, speaker-grouped CV, over the
transformer blocks) must beat the same architecture's seeded random init.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from speechlens.extract import extract_corpus
from speechlens.models import ADAPTERS
from speechlens.probing import run_task
from speechlens.tera.train import train

pytestmark = pytest.mark.slow

# The library defaults (= the workflow's `training` defaults), without resumable states.
SETTINGS = {"checkpoint_every": 1000, "heldout_speakers": 2}
STORE = {"dtype": "float32", "chunk_frames": 4096, "block_frames": 20000, "batch_seconds": 60,
         "shards": 1}  # fmt: skip
PHONE = {"level": "frame", "source": "phone", "group_by": "speaker", "probes": ["linear"],
         "folds": 3, "max_per_class": 60}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from speechlens.corpora.synthetic import build

    root = tmp_path_factory.mktemp("tera_training")
    spec = {"kind": "synthetic", "languages": ["en-us"], "speakers_per_language": 8,
            "sentences_per_speaker": 15, "seed": 0}  # fmt: skip
    build(spec, root / "corpus", threads=2)
    torch.set_num_threads(2)
    log = train(
        root / "corpus" / "utterances.tsv", "en-us", root / "tera_en", SETTINGS,
        state_dir=root / "state", threads=2,
    )  # fmt: skip
    return root, log


def test_heldout_loss_falls_well_below_the_mean_predictor(trained):
    _, log = trained
    first, last = log.iloc[0], log.iloc[-1]
    print(log.to_string())
    assert last["step"] == 600
    assert first["heldout_loss"] > 0.9 * first["heldout_mean_loss"]  # untrained: no better
    assert last["heldout_loss"] < 0.8 * last["heldout_mean_loss"]
    assert last["heldout_loss"] < 0.75 * first["heldout_loss"]


def _phone_scores(root: Path, init: str) -> pd.DataFrame:
    """Linear-probe phone macro-F1 ``(layer, fold)`` of the trained model or its random init."""
    corpus = root / "corpus"
    adapter = ADAPTERS["tera"](str(root / "tera_en"), init=init, seed=0, threads=2)
    store_path = root / f"{init}.zarr"
    extract_corpus(adapter, corpus / "utterances.tsv", store_path, settings=STORE,
                   attrs={"model": init, "corpus": "test"})  # fmt: skip
    out = root / f"{init}_phone.tsv"
    run_task(store_path, corpus / "utterances.tsv", corpus / "segments.tsv", PHONE, {}, out,
             threads=2)  # fmt: skip
    table = pd.read_csv(out, sep="\t", dtype={"layer": str, "fold": str})
    sel = table[(table.probe == "linear") & (table.metric == "macro_f1")]
    sel = sel[~sel.fold.isin(["mean", "std"])].astype({"layer": int})
    return sel.pivot(index="layer", columns="fold", values="value")


def test_trained_phone_probe_beats_its_random_init(trained):
    """The claim: over the transformer blocks (layers 1..), the trained model's phone probe
    beats its own random init on every speaker fold (paired: the same folds), by > 0.01
    macro-F1 on average. The folds' raw scores spread by ~0.1 (speakers differ in
    difficulty); the paired difference is the comparison's own spread."""
    root, _ = trained
    trained_f1, random_f1 = (_phone_scores(root, init) for init in ("pretrained", "random"))
    print(pd.concat({"pretrained": trained_f1, "random": random_f1}, axis=1).to_string())
    diff = (trained_f1 - random_f1).loc[1:]  # (block, fold)
    print("trained - random:\n" + diff.to_string())
    assert diff.shape == (3, PHONE["folds"])
    assert (diff.mean(axis=0) > 0).all()  # every fold
    assert diff.to_numpy().mean() > 0.01
    assert (trained_f1.loc[1:].mean(axis=1) > random_f1.loc[1:].mean(axis=1)).all()  # each block
