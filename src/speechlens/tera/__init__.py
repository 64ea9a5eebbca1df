"""TERA (Liu, Li and Lee 2021, "TERA: Self-Supervised Learning of Transformer Encoder
Representation for Speech"), small enough to pretrain inside the workflow.

- :mod:`~speechlens.tera.model`: the network (log-mel input projection, BERT encoder,
  reconstruction head) and its folder format;
- :mod:`~speechlens.tera.alteration`: the time, frequency and magnitude alterations;
- :mod:`~speechlens.tera.data`: training utterances of one language as normalised log-mel;
- :mod:`~speechlens.tera.train`: the resumable training loop, its log and loss curve.

The ``tera`` adapter (:mod:`speechlens.models.tera`) loads a trained folder like any model.
"""
