# Input functions and targets of rules/figures.smk (kept apart: snakemake --lint wants
# functions and rules in separate files). No computation here.


def layered_models():
    """Configured models with more than one layer (not the spectral baselines), sorted."""
    return [
        m
        for m in sorted(config["models"])
        if not has_capability(config["models"][m]["family"], "spectral")
    ]


def probe_figures():
    """Per-layer probes drawn (figures.probes) that some task runs, in config order."""
    run = {p for task in config["probing"]["tasks"].values() for p in task["probes"]}
    return [p for p in config["figures"]["probes"] if p in run]


def weighted_sum_tasks():
    """Tasks that run the weighted-sum probe, sorted."""
    tasks = config["probing"]["tasks"]
    return [t for t in sorted(tasks) if "weighted_sum" in tasks[t]["probes"]]


def probe_tables(tasks, models):
    """Input function: the probe tables of the given tasks and models of a corpus (the
    pairs that are probed: a task's `models` may leave some out)."""

    def tables(wildcards):
        return [
            f"results/{wildcards.corpus}/{model}/probes/{task}.tsv"
            for model, task in probed_pairs(config)
            if model in models and task in tasks
        ]

    return tables


def probe_figure_tasks(wildcards):
    """Tasks that run probe {probe}, sorted."""
    tasks = config["probing"]["tasks"]
    return [t for t in sorted(tasks) if wildcards.probe in tasks[t]["probes"]]


def probe_figure_tables(wildcards):
    return probe_tables(probe_figure_tasks(wildcards), sorted(config["models"]))(
        wildcards
    )


def cka_pair_paths(wildcards):
    """The across-model CKA matrices of a corpus, in config order."""
    return [
        f"results/{wildcards.corpus}/cka/{a}--{b}.zarr"
        for a, b in config["cka"]["pairs"]
    ]


def figure_targets():
    """Every figure and report page of the configured experiment (PNG paths)."""
    out = []
    for corpus in analysed_corpora(config):
        fig = f"results/figures/{corpus}"
        out += [f"{fig}/probes_{p}.png" for p in probe_figures() if config["models"]]
        if weighted_sum_tasks() and layered_models():
            out.append(f"{fig}/layer_weights.png")
        if config["cka"]["within"] and layered_models():
            out.append(f"{fig}/cka_within.png")
        if config["cka"]["pairs"]:
            out.append(f"{fig}/cka_across.png")
        if config["models"]:
            out.append(f"results/{corpus}/provenance.html")
    return out + attention_figure_targets()


def ablation_metric():
    """Score drawn in the ablation figure: figures.cluster_metric for a kmeans ablation
    probe, else figures.metric."""
    kmeans = config["attention"]["ablation"]["probe"] == "kmeans"
    return config["figures"]["cluster_metric" if kmeans else "metric"]


ATTENTION_FIGURES = {
    "head_types.tsv": "head_types",
    "ablation.tsv": "ablation",
    "cross_attention_saliency.tsv": "saliency",
}


def attention_figure_targets():
    """Figures of the attention and saliency tables that are targets (attention_targets()
    of rules/common.smk, saliency_targets() of rules/saliency_common.smk)."""
    out = []
    for path in attention_targets() + saliency_targets():
        _, corpus, model, _, name = path.split("/")
        if name in ATTENTION_FIGURES:
            out.append(
                f"results/figures/{corpus}/{ATTENTION_FIGURES[name]}_{model}.png"
            )
    return out
