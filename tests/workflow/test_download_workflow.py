"""The `corpus` rule with a downloaded kind: snakemake --configfile building a LibriSpeech
subset served on 127.0.0.1 (connection cut once mid-file, resumed), cached under
resources/downloads/."""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

from speechlens.corpora.download import NET_CHUNK_BYTES, sha256sum
from tests import corpus_layouts as layouts
from tests.conftest import run_snakemake
from tests.httpserver import FileServer

pytestmark = pytest.mark.slow


def test_corpus_rule_downloads_and_builds_librispeech(tmp_path):
    served = tmp_path / "srv"
    served.mkdir()
    expected = layouts.make_librispeech(tmp_path / "release")
    archive = layouts.pack(tmp_path / "release", served / "dev-clean.tar.gz")
    workdir = tmp_path / "work"
    workdir.mkdir()
    with FileServer(served) as server:
        config = {
            "corpora": {
                "ls": {
                    "kind": "librispeech",
                    "url": f"{server.url}/dev-clean.tar.gz",
                    "sha256": sha256sum(archive),
                    "utterances_per_speaker": 2,
                    "retries": 1,
                }
            },
            "models": {},
        }
        configfile = tmp_path / "ls.yaml"
        configfile.write_text(yaml.safe_dump(config))
        cut = NET_CHUNK_BYTES + 20_000  # one network chunk arrives whole before the cut
        assert archive.stat().st_size > cut
        server.cut(cut)
        target = "resources/corpora/ls/utterances.tsv"
        run_snakemake(workdir, "--cores", "1", target, configfile=configfile)
    assert [r for _, r in server.requests][0] is None
    assert server.requests[1][1] == f"bytes={NET_CHUNK_BYTES}-"  # resumed after the cut
    assert sha256sum(workdir / "resources" / "downloads" / "dev-clean.tar.gz") == sha256sum(archive)
    utts = pd.read_csv(workdir / target, sep="\t", dtype={"speaker": str})
    assert len(utts) == 2 * len(layouts.LIBRI_SPEAKERS)
    assert set(utts.utterance_id) <= set(expected)
    assert utts.groupby("speaker").size().to_dict() == {s: 2 for s in layouts.LIBRI_SPEAKERS}
    log = (workdir / "logs" / "corpora" / "ls.log").read_text()
    assert "resuming at byte" in log and "built librispeech dev-clean" in log
