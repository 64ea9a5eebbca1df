"""Benchmark: peak memory of extraction does not grow with corpus size.

Extracts a synthetic corpus of N utterances and one of 4N with Whisper tiny.en, each in a
fresh process, and prints both peak RSS values and their ratio. Target: ratio <= 1.10.
Memory is bounded by `block_frames` (20000 frames by default), so N must already span a
few blocks (the default N = 200 is about 2 blocks); a corpus smaller than one block uses less.

    .venv/bin/python benchmarks/extract_memory.py [--utterances 100] [--padding trim]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import SETTINGS, build_corpus, whisper_tiny

CHILD = """
import json, resource, sys
from speechlens.extract import extract_corpus
from speechlens.models import make_adapter
settings = json.loads(sys.argv[1]); spec = json.loads(sys.argv[2])
adapter = make_adapter(spec, settings, threads=2)
extract_corpus(adapter, sys.argv[3], sys.argv[4], settings=settings, attrs={})
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_rss_mb(spec: dict, corpus: Path, out: Path) -> float:
    """Peak resident memory (MB) of a fresh process that extracts ``corpus``."""
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            CHILD,
            json.dumps(SETTINGS),
            json.dumps(spec),
            str(corpus / "utterances.tsv"),
            str(out),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(proc.stdout.split()[-1]) / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--utterances", type=int, default=200, help="1x size: several blocks")
    parser.add_argument("--padding", default="trim", choices=["trim", "pad30"])
    args = parser.parse_args()
    per_speaker = max(1, round(args.utterances / 40))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        spec = {
            "family": "whisper",
            "source": str(whisper_tiny(tmp / "wt")),
            "padding": args.padding,
        }
        peaks = []
        for factor in (1, 4):
            corpus = tmp / f"c{factor}"
            utts = build_corpus(corpus, sentences=per_speaker * factor)
            peak = peak_rss_mb(spec, corpus, tmp / f"f{factor}.zarr")
            peaks.append(peak)
            print(
                f"{len(utts):5d} utterances, {utts['duration_s'].sum():7.0f} s audio: "
                f"peak RSS {peak:7.1f} MB"
            )
    ratio = peaks[1] / peaks[0]
    print(f"peak RSS ratio 4x/1x: {ratio:.3f} (target <= 1.10)")
    return 0 if ratio <= 1.10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
