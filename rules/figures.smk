rule corpus_summary:
    """Durations, speakers and phone inventory of a corpus, per language."""
    input:
        utterances="resources/corpora/{corpus}/utterances.tsv",
        segments="resources/corpora/{corpus}/segments.tsv",
    output:
        png=report(
            "results/figures/{corpus}/corpus_summary.png",
            caption="../report/corpus_summary.rst",
            category="Corpus",
            subcategory="{corpus}",
        ),
        pdf="results/figures/{corpus}/corpus_summary.pdf",
    log:
        "logs/figures/{corpus}/corpus_summary.log",
    conda:
        ENV
    script:
        "../workflow/scripts/corpus_summary.py"
