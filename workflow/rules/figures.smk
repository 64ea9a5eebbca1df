# Figures (PNG + PDF under results/figures/{corpus}/) flagged for the report, and the
# provenance page of each corpus. Captions: report/*.rst.


include: "figures_common.smk"


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
    benchmark:
        "logs/figures/{corpus}/corpus_summary.benchmark.tsv"
    conda:
        ENV
    params:
        dpi=config["figures"]["dpi"],
        code=code_version("corpus_summary.py"),
    script:
        "../scripts/corpus_summary.py"


rule figure_probes:
    """Score vs layer of one probe: a panel per task, a line per model, baselines, control."""
    input:
        probe_figure_tables,
    output:
        png=report(
            "results/figures/{corpus}/probes_{probe}.png",
            caption="../report/probes.rst",
            category="Probing",
            subcategory="{corpus}",
            labels={"figure": "score vs layer", "probe": "{probe}"},
        ),
        pdf="results/figures/{corpus}/probes_{probe}.pdf",
    log:
        "logs/figures/{corpus}/probes_{probe}.log",
    benchmark:
        "logs/figures/{corpus}/probes_{probe}.benchmark.tsv"
    wildcard_constraints:
        probe="linear|knn|mlp|kmeans",
    conda:
        ENV
    params:
        models=sorted(config["models"]),
        tasks=probe_figure_tasks,
        metric=lambda wildcards: config["figures"][
            "cluster_metric" if wildcards.probe == "kmeans" else "metric"
        ],
        spread=config["figures"]["spread"],
        dpi=config["figures"]["dpi"],
        code=code_version("figure_probes.py"),
    script:
        "../scripts/figure_probes.py"


rule figure_layer_weights:
    """Softmax layer weights of the weighted-sum probe per task and model."""
    input:
        probe_tables(weighted_sum_tasks(), layered_models()),
    output:
        png=report(
            "results/figures/{corpus}/layer_weights.png",
            caption="../report/layer_weights.rst",
            category="Probing",
            subcategory="{corpus}",
            labels={"figure": "weighted-sum layer weights", "probe": "weighted_sum"},
        ),
        pdf="results/figures/{corpus}/layer_weights.pdf",
    log:
        "logs/figures/{corpus}/layer_weights.log",
    benchmark:
        "logs/figures/{corpus}/layer_weights.benchmark.tsv"
    conda:
        ENV
    params:
        models=sorted(config["models"]),
        tasks=weighted_sum_tasks(),
        metric=config["figures"]["metric"],
        dpi=config["figures"]["dpi"],
        code=code_version("figure_layer_weights.py"),
    script:
        "../scripts/figure_layer_weights.py"


rule figure_cka_within:
    """Each model's layer x layer CKA matrix, one shared 0-1 colour scale."""
    input:
        lambda wildcards: expand(
            "results/{corpus}/{model}/cka.zarr",
            corpus=wildcards.corpus,
            model=layered_models(),
        ),
    output:
        png=report(
            "results/figures/{corpus}/cka_within.png",
            caption="../report/cka_within.rst",
            category="Similarity",
            subcategory="{corpus}",
            labels={"figure": "CKA within models"},
        ),
        pdf="results/figures/{corpus}/cka_within.pdf",
    log:
        "logs/figures/{corpus}/cka_within.log",
    benchmark:
        "logs/figures/{corpus}/cka_within.benchmark.tsv"
    conda:
        ENV
    params:
        models=layered_models(),
        dpi=config["figures"]["dpi"],
        code=code_version("figure_cka.py"),
    script:
        "../scripts/figure_cka.py"


rule figure_cka_across:
    """Layer x layer CKA across the configured model pairs, one shared 0-1 colour scale."""
    input:
        cka_pair_paths,
    output:
        png=report(
            "results/figures/{corpus}/cka_across.png",
            caption="../report/cka_across.rst",
            category="Similarity",
            subcategory="{corpus}",
            labels={"figure": "CKA across models"},
        ),
        pdf="results/figures/{corpus}/cka_across.pdf",
    log:
        "logs/figures/{corpus}/cka_across.log",
    benchmark:
        "logs/figures/{corpus}/cka_across.benchmark.tsv"
    conda:
        ENV
    params:
        pairs=[list(pair) for pair in config["cka"]["pairs"]],
        dpi=config["figures"]["dpi"],
        code=code_version("figure_cka.py"),
    script:
        "../scripts/figure_cka.py"


rule figure_head_types:
    """A model's self-attention head types: layer x head grid, diagonality vs verticality,
    example maps."""
    input:
        table="results/{corpus}/{model}/attention/head_types.tsv",
        examples="results/{corpus}/{model}/attention/examples.zarr",
    output:
        png=report(
            "results/figures/{corpus}/head_types_{model}.png",
            caption="../report/head_types.rst",
            category="Attention",
            subcategory="{corpus}",
            labels={"figure": "head types", "model": "{model}"},
        ),
        pdf="results/figures/{corpus}/head_types_{model}.pdf",
    log:
        "logs/figures/{corpus}/head_types_{model}.log",
    benchmark:
        "logs/figures/{corpus}/head_types_{model}.benchmark.tsv"
    conda:
        ENV
    params:
        thresholds=config["attention"]["thresholds"],
        dpi=config["figures"]["dpi"],
        code=code_version("figure_head_types.py"),
    script:
        "../scripts/figure_head_types.py"


rule figure_ablation:
    """Probe score change per ablated group of heads, random controls beside."""
    input:
        table="results/{corpus}/{model}/attention/ablation.tsv",
    output:
        png=report(
            "results/figures/{corpus}/ablation_{model}.png",
            caption="../report/ablation.rst",
            category="Attention",
            subcategory="{corpus}",
            labels={"figure": "head ablation", "model": "{model}"},
        ),
        pdf="results/figures/{corpus}/ablation_{model}.pdf",
    log:
        "logs/figures/{corpus}/ablation_{model}.log",
    benchmark:
        "logs/figures/{corpus}/ablation_{model}.benchmark.tsv"
    conda:
        ENV
    params:
        metric=ablation_metric(),
        dpi=config["figures"]["dpi"],
        code=code_version("figure_ablation.py"),
    script:
        "../scripts/figure_ablation.py"


rule figure_saliency:
    """Decoder cross-attention vs input saliency of a Whisper model: per-head heatmaps,
    head / layer / global bars, one example utterance."""
    input:
        table="results/{corpus}/{model}/attention/cross_attention_saliency.tsv",
        summary="results/{corpus}/{model}/attention/cross_attention_saliency_summary.tsv",
        example="results/{corpus}/{model}/attention/cross_attention_saliency_example.zarr",
    output:
        png=report(
            "results/figures/{corpus}/saliency_{model}.png",
            caption="../report/saliency.rst",
            category="Attention",
            subcategory="{corpus}",
            labels={"figure": "cross-attention vs saliency", "model": "{model}"},
        ),
        pdf="results/figures/{corpus}/saliency_{model}.pdf",
    log:
        "logs/figures/{corpus}/saliency_{model}.log",
    benchmark:
        "logs/figures/{corpus}/saliency_{model}.benchmark.tsv"
    conda:
        ENV
    params:
        dpi=config["figures"]["dpi"],
        code=code_version("figure_saliency.py"),
    script:
        "../scripts/figure_saliency.py"


rule provenance:
    """What produced a corpus' results: each model's weights checksums, revision and
    library versions (from its feature store), the code commit, and the full config."""
    input:
        stores=lambda wildcards: expand(
            "results/{corpus}/{model}/features.zarr",
            corpus=wildcards.corpus,
            model=sorted(config["models"]),
        ),
        utterances="resources/corpora/{corpus}/utterances.tsv",
    output:
        table="results/{corpus}/provenance.tsv",
        html=report(
            "results/{corpus}/provenance.html",
            caption="../report/provenance.rst",
            category="Provenance",
            subcategory="{corpus}",
        ),
    log:
        "logs/{corpus}/provenance.log",
    benchmark:
        "logs/{corpus}/provenance.benchmark.tsv"
    conda:
        FIGURES_ENV
    params:
        models=sorted(config["models"]),
        config=config,
        code=code_version("provenance.py"),
    script:
        "../scripts/provenance.py"
