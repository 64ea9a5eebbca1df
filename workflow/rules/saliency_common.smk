# Target list of rules/saliency.smk (functions only).


def saliency_models():
    """Models analysed: `saliency.models` (checked by speechlens.checks), or every
    pretrained model with decoder cross-attention (random-init models are skipped: an
    untrained decoder's tokens explain nothing)."""
    names = config["saliency"]["models"]
    if names is None:
        return [
            name
            for name, spec in sorted(config["models"].items())
            if has_capability(spec["family"], "cross_attention")
            and spec["init"] == "pretrained"
        ]
    return list(names)


def saliency_targets():
    """Cross-attention vs saliency tables of every analysed (corpus, model)."""
    if not config["saliency"]["enabled"]:
        return []
    return expand(
        "results/{corpus}/{model}/attention/cross_attention_saliency{suffix}.tsv",
        corpus=analysed_corpora(config),
        model=saliency_models(),
        suffix=["", "_summary"],
    )
