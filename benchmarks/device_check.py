"""Device check: the CUDA paths against the CPU on a small config, in minutes.

Runs each path on the CPU (the reference) and, when CUDA is present, on the GPU, and prints
one line per check: throughput (GPU / CPU) and agreement with the CPU run.

- extraction (random wav2vec2, float16 store, the writer thread overlapping compute):
  CUDA in float32, float16 and bfloat16 compute; agreement = relative RMS error per store
  (float32 compute must match to float16 storage tolerance, 2^-10 relative; half-precision
  compute is reported and must stay below 5e-2);
- CKA (within the CPU store) on CUDA vs CPU: max |difference| <= 1e-6;
- the torch linear probe on CUDA vs the CPU (torch and scikit-learn): accuracy within 0.01;
- SPES batched masks (``speechlens.saliency.spes.spes_saliency``, guarded: skipped if that
  module is absent) on a toy decoder: map correlation CUDA vs CPU >= 0.999;
- TERA training (a few steps): steps per second, losses finite.

Without CUDA it says so, runs the CPU side (a smoke test of this script) and exits 0.
Exit status 1 when a check fails.

    PYTHONPATH=src python benchmarks/device_check.py [--size tiny|base] [--speakers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import SETTINGS, build_corpus  # noqa: E402
from linear_probe import make_data  # noqa: E402

from speechlens import store  # noqa: E402
from speechlens.extract import extract_corpus  # noqa: E402
from speechlens.models import make_adapter  # noqa: E402

FAILED: list[str] = []


def report(ok: bool | None, name: str, detail: str) -> None:
    """One result line; ``ok`` None = information only."""
    tag = {True: "PASS", False: "FAIL", None: "INFO"}[ok]
    print(f"{tag} {name}: {detail}", flush=True)
    if ok is False:
        FAILED.append(name)


def wav2vec2(out: Path, size: str) -> Path:
    """A random wav2vec2 (seeded): ``base`` = 12 x 768, ``tiny`` = 2 x 64."""
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    if size == "base":
        config = Wav2Vec2Config()
    else:
        config = Wav2Vec2Config(
            hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
            conv_dim=(32,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4,
        )  # fmt: skip
    torch.manual_seed(0)
    Wav2Vec2Model(config).save_pretrained(out)
    Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False).save_pretrained(out)
    return out


def extract(corpus: Path, model: Path, out: Path, device: str, compute: str) -> float:
    """Extract the corpus; returns the wall seconds."""
    settings = {**SETTINGS, "device": device, "compute_dtype": compute}
    adapter = make_adapter({"family": "wav2vec2", "source": str(model)}, settings, threads=2)
    adapter.load()
    t0 = time.perf_counter()
    extract_corpus(adapter, corpus / "utterances.tsv", out, settings=settings, attrs={})
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def rel_rms(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.sqrt(np.mean((a - b) ** 2)) / max(np.sqrt(np.mean(b**2)), 1e-12))


def check_extraction(root: Path, corpus: Path, size: str, cuda: bool, audio_s: float) -> Path:
    model = wav2vec2(root / "model", size)
    ref = root / "cpu.zarr"
    wall = extract(corpus, model, ref, "cpu", "float32")
    report(None, "extraction cpu float32", f"{audio_s / wall:.1f} audio-s/s")
    if not cuda:
        return ref
    want = store.open_store(ref)["hidden"].values
    for compute, limit in (("float32", 2.0**-10), ("float16", 5e-2), ("bfloat16", 5e-2)):
        out = root / f"cuda_{compute}.zarr"
        wall_gpu = extract(corpus, model, out, "cuda", compute)
        err = rel_rms(store.open_store(out)["hidden"].values, want)
        report(
            err <= limit,
            f"extraction cuda {compute}",
            f"{audio_s / wall_gpu:.1f} audio-s/s ({wall / wall_gpu:.1f}x cpu), "
            f"relative RMS error vs cpu {err:.2e} (limit {limit:.1e})",
        )
    return ref


def check_cka(store_path: Path, cuda: bool) -> None:
    from speechlens import cka

    t0 = time.perf_counter()
    cpu = cka.compute(store_path, device="cpu").values
    t_cpu = time.perf_counter() - t0
    report(None, "cka cpu", f"{t_cpu:.2f} s for {cpu.shape} layers")
    if cuda:
        t0 = time.perf_counter()
        gpu = cka.compute(store_path, device="cuda").values
        t_gpu = time.perf_counter() - t0
        diff = float(np.nanmax(np.abs(gpu - cpu)))
        report(diff <= 1e-6, "cka cuda", f"{t_cpu / t_gpu:.1f}x cpu, max |diff| {diff:.1e}")


def check_probe(n: int, cuda: bool) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from speechlens.probes.linear_torch import TorchLogisticRegression

    X, y = make_data(n, 384, 40)
    cut = n * 4 // 5
    TorchLogisticRegression(max_iter=2).fit(X[:200], y[:200])  # one-off torch.optim import
    t0 = time.perf_counter()
    ref = make_pipeline(StandardScaler(), LogisticRegression()).fit(X[:cut], y[:cut])
    t_sk = time.perf_counter() - t0
    acc_sk = float((ref.predict(X[cut:]) == y[cut:]).mean())
    runs = {"cpu": None, "cuda": None} if cuda else {"cpu": None}
    for device in runs:
        t0 = time.perf_counter()
        clf = TorchLogisticRegression(device=device).fit(X[:cut], y[:cut])
        acc = float((clf.predict(X[cut:]) == y[cut:]).mean())
        seconds = time.perf_counter() - t0
        report(
            abs(acc - acc_sk) <= 0.01,
            f"linear probe torch {device}",
            f"{n} x 384 x 40: {t_sk / seconds:.1f}x sklearn ({seconds:.2f} s), accuracy "
            f"{acc:.4f} vs sklearn {acc_sk:.4f}, converged {clf.converged_}",
        )


class _SpesToy:
    """Token k's logit rises with the mean of mel block k (a known relevance map)."""

    def __init__(self, device, n_bins=80, n_frames=100, vocab=8):
        g = torch.Generator().manual_seed(0)
        self.base = torch.randn(3, vocab, generator=g).to(device)
        self.rel = torch.zeros(3, n_bins, n_frames, device=device)
        for k, (b, f) in enumerate(((slice(20, 50), slice(10, 30)), (slice(5, 25), slice(40, 56)),
                                    (slice(40, 70), slice(70, 90)))):  # fmt: skip
            self.rel[k, b, f] = 1.0

    def encode(self, mel):
        return mel.float()

    def log_distribution(self, states, input_ids, positions):
        drive = torch.einsum("kft,bft->bk", self.rel, states[:, :, : self.rel.shape[2]])
        logits = self.base[None].repeat(states.shape[0], 1, 1)
        logits[:, torch.arange(3), torch.arange(3)] += 0.02 * drive
        return torch.log_softmax(logits, -1)


def check_spes(cuda: bool) -> None:
    try:
        from dataclasses import replace

        from speechlens.saliency import spes
        from speechlens.schema import defaults

        settings = replace(spes.SpesSettings.from_mapping(defaults("saliency.spes")), n_masks=256)
    except (ImportError, AttributeError, KeyError, TypeError) as err:
        report(None, "spes", f"skipped: speechlens.saliency.spes not usable here ({err})")
        return
    rng = np.random.default_rng(0)
    mel = torch.from_numpy(0.1 + 0.02 * rng.standard_normal((1, 80, 100))).float()
    args = (np.zeros(3, dtype=np.int64), np.arange(3), np.arange(3))
    maps = {}
    for device in ("cpu", "cuda") if cuda else ("cpu",):
        t0 = time.perf_counter()
        res = spes.spes_saliency(_SpesToy(device), mel.to(device), *args, 100, settings)
        maps[device] = np.asarray(res.raw_map if hasattr(res, "raw_map") else res, np.float64)
        report(None, f"spes {device}", f"{time.perf_counter() - t0:.2f} s for 256 masks")
    if cuda:
        r = np.corrcoef(maps["cpu"].ravel(), maps["cuda"].ravel())[0, 1]
        report(r >= 0.999, "spes cuda vs cpu", f"map correlation {r:.5f}")


def check_tera(corpus: Path, root: Path, cuda: bool) -> None:
    from speechlens.tera.train import train

    base = {"steps": 20, "eval_every": 10, "checkpoint_every": 10, "batch_size": 8}
    base["heldout_speakers"] = 1
    base["crop_frames"] = 100
    seconds = {}
    for device in ("cpu", "cuda") if cuda else ("cpu",):
        t0 = time.perf_counter()
        log = train(
            corpus / "utterances.tsv", "en-us", root / f"tera_{device}", {**base, "device": device},
            state_dir=root / f"tera_state_{device}", threads=2,
        )  # fmt: skip
        seconds[device] = time.perf_counter() - t0
        losses = log["train_loss"].dropna().to_numpy(float)  # the step-0 row has none
        finite = len(losses) > 0 and bool(np.isfinite(losses).all())
        report(
            finite,
            f"tera training {device}",
            f"{20 / seconds[device]:.1f} steps/s, last train loss {losses[-1]:.3f}",
        )
    if cuda:
        report(None, "tera training cuda vs cpu", f"{seconds['cpu'] / seconds['cuda']:.1f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=["tiny", "base"], default=None)
    parser.add_argument("--speakers", type=int, default=None, help="per language (corpus)")
    parser.add_argument("--probe-frames", type=int, default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if cuda:
        print(f"CUDA: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    else:
        print("no CUDA: running the CPU side only (a smoke test); the CUDA checks need a GPU")
    size = args.size or ("base" if cuda else "tiny")
    speakers = args.speakers or (4 if cuda else 3)
    n_probe = args.probe_frames or (50000 if cuda else 3000)
    checks = ("extraction", "cka", "probe", "spes", "tera")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        corpus = root / "corpus"
        utts = build_corpus(corpus, languages=("en-us",), speakers=speakers, sentences=3)
        audio_s = float(utts["duration_s"].sum())
        print(f"corpus: {len(utts)} utterances, {audio_s:.1f} s; model size {size}")
        ref = None
        for name in checks:
            try:
                if name == "extraction":
                    ref = check_extraction(root, corpus, size, cuda, audio_s)
                elif name == "cka" and ref is not None:
                    check_cka(ref, cuda)
                elif name == "probe":
                    check_probe(n_probe, cuda)
                elif name == "spes":
                    check_spes(cuda)
                elif name == "tera":
                    check_tera(corpus, root, cuda)
            except Exception:  # noqa: BLE001 - one failed check must not hide the others
                traceback.print_exc()
                report(False, name, "raised (traceback above)")
    print(f"{len(FAILED)} failed: {FAILED}" if FAILED else "all checks passed")
    return 1 if FAILED else 0


if __name__ == "__main__":
    raise SystemExit(main())
