# Input functions and targets of rules/findings.smk (functions only).


def findings_models():
    """Per model: whether it is a speaker model (declares utterance-level embeddings) and a
    random-init control; the findings page compares and filters models by these."""
    from speechlens.models import has_capability

    return {
        name: {
            "speaker": has_capability(spec["family"], "utterance_level"),
            "random": spec.get("init") == "random",
        }
        for name, spec in sorted(config["models"].items())
    }


def findings_inputs(wildcards):
    """Every probe table, head-ablation summary and cross-attention vs saliency table of a
    corpus."""
    corpus = wildcards.corpus
    return {
        "probes": [
            f"results/{corpus}/{m}/probes/{t}.tsv" for m, t in probed_pairs(config)
        ],
        "ablation": [
            f"results/{corpus}/{m}/attention/ablation_summary.tsv"
            for m in ablation_models()
        ],
        "saliency": [
            f"results/{corpus}/{m}/attention/cross_attention_saliency.tsv"
            for m in (saliency_models() if config["saliency"]["enabled"] else [])
        ],
    }


def findings_targets():
    """The findings page of every corpus."""
    return expand("results/{corpus}/findings.tsv", corpus=analysed_corpora(config))
