rule corpus:
    """Build a corpus folder (synthetic espeak-ng speech, a user's folder, or a public corpus:
    librispeech downloaded into resources/downloads/, timit, commonvoice, voxceleb) per the contract.
    """
    output:
        utterances="resources/corpora/{corpus}/utterances.tsv",
        segments="resources/corpora/{corpus}/segments.tsv",
        audio=directory("resources/corpora/{corpus}/audio"),
    log:
        "logs/corpora/{corpus}.log",
    benchmark:
        "logs/corpora/{corpus}.benchmark.tsv"
    priority: PRIORITY_INPUTS
    conda:
        ENV
    threads: 8
    params:
        spec=corpus_spec,
        code=code_version("corpus.py"),
    script:
        "../scripts/corpus.py"
