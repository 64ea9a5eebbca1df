rule corpus:
    """Build a corpus folder (synthetic espeak-ng speech or a user's folder) per the contract."""
    output:
        utterances="resources/corpora/{corpus}/utterances.tsv",
        segments="resources/corpora/{corpus}/segments.tsv",
        audio=directory("resources/corpora/{corpus}/audio"),
    log:
        "logs/corpora/{corpus}.log",
    conda:
        ENV
    threads: 8
    params:
        spec=corpus_spec,
    script:
        "../workflow/scripts/corpus.py"
