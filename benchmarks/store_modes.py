"""Benchmark: bytes per audio-second of each reduced store mode against the full store.

Builds a slice of the default synthetic corpus (default: 1 language x 4 speakers x 5
sentences), extracts it with a model of the base architecture (a random-init wav2vec2,
12 blocks x 768, 50 frames/s, the size of a LibriSpeech "base" model) once per store mode
(float16, the default dtype) and prints, per mode: stored vectors per audio-second, bytes
on disk per audio-second (all Zarr files, compressed), the ratio full / mode and the
extraction's audio-seconds per wall second on this CPU. Then a held-out-speaker linear
probe (StandardScaler + LogisticRegression, C=1) of the phone on the middle and last layer:
frame probing (frames labelled by the frame-centre rule) vs phone-pooled probing.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/store_modes.py [--speakers 4]
        [--sentences 5] [--threads 1] [--model wav2vec2_base | logmel]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SETTINGS, build_corpus, du, wav2vec2_base_sized  # noqa: E402

from speechlens import labels, store  # noqa: E402
from speechlens.corpora.contract import read_corpus  # noqa: E402
from speechlens.extract import extract_corpus  # noqa: E402
from speechlens.models import make_adapter  # noqa: E402

MODES = {
    "frame (full)": {},
    "frame_stride 2": {"frame_stride": 2},
    "every 4th layer": {"layers": "every 4th"},  # 0, 4, 8, 12 of a base model
    "segment:phone": {"pool": "segment:phone"},
    "segment:word": {"pool": "segment:word"},
    "utterance": {"pool": "utterance"},
}


def _spec(name: str, root: Path) -> dict:
    if name == "logmel":
        return {"family": "logmel"}
    return {"family": "wav2vec2", "source": str(wav2vec2_base_sized(root / "w2v_base"))}


def probe_accuracy(X: np.ndarray, y: np.ndarray, speaker: np.ndarray) -> float:
    """Held-out-speaker accuracy (the last quarter of the speakers by name is the test set)."""
    speakers = np.unique(speaker)
    test = np.isin(speaker, speakers[-max(1, len(speakers) // 4) :])
    train_classes = set(y[~test])
    test &= np.isin(y, list(train_classes))
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=1000))
    clf.fit(X[~test].astype(np.float32), y[~test])
    return float((clf.predict(X[test].astype(np.float32)) == y[test]).mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--speakers", type=int, default=4)
    parser.add_argument("--sentences", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="wav2vec2_base", choices=["wav2vec2_base", "logmel"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_corpus(
            root / "corpus", languages=("en-us",), speakers=args.speakers,
            sentences=args.sentences, threads=args.threads,
        )  # fmt: skip
        utts, segs = read_corpus(root / "corpus")
        audio_s = float(utts["duration_s"].sum())
        n_phones = int((segs["tier"] == "phone").sum())
        print(f"corpus: {len(utts)} utterances, {audio_s:.1f} s of audio, {n_phones} phones")
        print(f"model: {args.model}, store dtype float16, threads {args.threads}")
        spec = _spec(args.model, root)
        rows, stores = [], {}
        for name, reduction in MODES.items():
            if reduction.get("layers") == "every 4th":
                reduction = {"layers": list(range(0, stores["frame (full)"].sizes["layer"], 4))}
            settings = {**SETTINGS, **reduction}
            adapter = make_adapter(spec, settings, threads=args.threads)
            out = root / f"{len(rows)}.zarr"
            t0 = time.perf_counter()
            extract_corpus(
                adapter, root / "corpus" / "utterances.tsv", out, settings=settings,
                attrs={"model": args.model, "corpus": "synth"},
            )  # fmt: skip
            wall = time.perf_counter() - t0
            ds = store.open_store(out)
            kind = store.mode(ds)
            vectors = ds.sizes["utterance"] if kind == "utterance" else ds.sizes[kind]
            rows.append((name, vectors * ds.sizes["layer"], du(out), wall))
            stores[name] = ds
        full_bytes = rows[0][2]
        print(
            f"{'mode':18s} {'vectors/s':>10s} {'bytes/audio-s':>14s} {'full/mode':>10s} "
            f"{'audio-s/s':>10s}"
        )
        for name, vectors, size, wall in rows:
            print(
                f"{name:18s} {vectors / audio_s:10.1f} {size / audio_s:14.0f} "
                f"{full_bytes / size:10.2f} {audio_s / wall:10.2f}"
            )
        frame, phone = stores["frame (full)"], stores["segment:phone"]
        speaker_of = utts.set_index("utterance_id")["speaker"].astype(str)
        ids = np.array([str(u) for u in frame["utterance_id"].values], dtype=object)
        tier = labels.tier_segments(segs, "phone")
        frame_ids = ids[frame["utterance_index"].values]
        table = labels.frame_table(frame_ids, frame["time_s"].values, tier)
        seg_table = store.segment_table(phone)
        n_layers = frame.sizes["layer"]
        for layer in sorted({n_layers // 2, n_layers - 1}):
            Xf = frame["hidden"][layer].values[table["frame"].to_numpy()]
            acc_f = probe_accuracy(
                Xf, table["label"].to_numpy(str),
                speaker_of.loc[frame_ids[table["frame"]]].to_numpy(),
            )  # fmt: skip
            acc_p = probe_accuracy(
                phone["hidden"][layer].values, seg_table["label"].to_numpy(str),
                speaker_of.loc[seg_table["utterance_id"]].to_numpy(),
            )  # fmt: skip
            print(
                f"phone probe, layer {layer}: frame accuracy {acc_f:.3f} ({len(table)} frames), "
                f"phone-pooled accuracy {acc_p:.3f} ({len(seg_table)} segments)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
