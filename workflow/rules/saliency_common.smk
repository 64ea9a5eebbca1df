# Target list and config check of rules/saliency.smk (functions only).


def saliency_models():
    """Models analysed: `saliency.models`, or every pretrained whisper model (random-init
    models are skipped: an untrained decoder's tokens explain nothing)."""
    names = config["saliency"]["models"]
    if names is None:
        return [
            name
            for name, spec in sorted(config["models"].items())
            if spec["family"] == "whisper" and spec["init"] == "pretrained"
        ]
    for i, name in enumerate(names):
        if name not in config["models"]:
            raise ValueError(
                f"config key saliency.models[{i}]: model {name!r} is not in `models`"
            )
        if config["models"][name]["family"] != "whisper":
            raise ValueError(
                f"config key saliency.models[{i}]: model {name!r} is not a whisper "
                "encoder-decoder model (no cross-attention)"
            )
    return list(names)


def saliency_targets():
    """Cross-attention vs saliency tables of every analysed (corpus, model)."""
    if not config["saliency"]["enabled"]:
        return []
    return expand(
        "results/{corpus}/{model}/attention/cross_attention_saliency{suffix}.tsv",
        corpus=sorted(config["corpora"]),
        model=saliency_models(),
        suffix=["", "_summary"],
    )


saliency_models()  # fails at start-up on a bad `saliency.models` entry
