"""TERA training is a real optimisation (slow: 15 min on the loaded shared 2-core machine).

On a small synthetic English corpus, a short training run must bring the held-out L1
reconstruction loss well below the loss of predicting the per-channel training mean, and the
trained model's phone probe (linear, speaker-grouped CV, best block) must beat the same
architecture's seeded random init -- which it does not yet at this scale (strict xfail).
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

SETTINGS = {
    "steps": 150,
    "batch_size": 8,
    "lr": 0.001,
    "warmup_steps": 15,
    "crop_frames": 300,
    "eval_every": 50,
    "checkpoint_every": 1000,
    "heldout_speakers": 2,
    "model": {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 256},
}
STORE = {"dtype": "float32", "chunk_frames": 4096, "block_frames": 20000, "batch_seconds": 60,
         "shards": 1}  # fmt: skip
PHONE = {"level": "frame", "source": "phone", "group_by": "speaker", "probes": ["linear"],
         "folds": 3, "max_per_class": 60}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from speechlens.corpora.synthetic import build

    root = tmp_path_factory.mktemp("tera_training")
    spec = {"kind": "synthetic", "languages": ["en-us"], "speakers_per_language": 6,
            "sentences_per_speaker": 12, "seed": 0}  # fmt: skip
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
    assert last["step"] == SETTINGS["steps"]
    assert first["heldout_loss"] > 0.9 * first["heldout_mean_loss"]  # untrained: no better
    assert last["heldout_loss"] < 0.8 * last["heldout_mean_loss"]
    assert last["heldout_loss"] < 0.75 * first["heldout_loss"]


def _phone_scores(root: Path, init: str) -> pd.Series:
    corpus = root / "corpus"
    adapter = ADAPTERS["tera"](str(root / "tera_en"), init=init, seed=0, threads=2)
    store_path = root / f"{init}.zarr"
    extract_corpus(adapter, corpus / "utterances.tsv", store_path, settings=STORE,
                   attrs={"model": init, "corpus": "test"})  # fmt: skip
    out = root / f"{init}_phone.tsv"
    run_task(store_path, corpus / "utterances.tsv", corpus / "segments.tsv", PHONE, {}, out,
             threads=2)  # fmt: skip
    table = pd.read_csv(out, sep="\t", dtype={"layer": str, "fold": str})
    sel = table[(table.probe == "linear") & (table.metric == "macro_f1") & (table.fold == "mean")]
    return sel.set_index("layer")["value"].rename(lambda layer: int(layer))


@pytest.mark.xfail(
    strict=True,
    reason="not met at this scale (measured 2026-11-22, best block macro-F1: 150 steps h64 "
    "trained 0.440 vs random 0.452; 400 steps h96 0.431 vs 0.472): short reconstruction "
    "training on ~2.5 min of speech does not beat a random projection of the log-mel. "
    "Strict: remove the mark once training makes it pass.",
)
def test_trained_phone_probe_beats_its_random_init(trained):
    root, _ = trained
    scores = pd.DataFrame({init: _phone_scores(root, init) for init in ("pretrained", "random")})
    print(scores.to_string())
    blocks = scores.loc[1:]  # the transformer blocks' outputs
    assert blocks["pretrained"].max() > blocks["random"].max() + 0.03
    assert (blocks["pretrained"] > blocks["random"]).all()
