"""The findings page: each seed study's main claims, what this run measured, and a verdict
computed from the result tables (never written by hand).

- :mod:`speechlens.findings.stats`: the statistics the verdicts rest on (per-fold peak
  layers, exact rank tests, curvature), pure functions on numbers;
- :mod:`speechlens.findings.claims`: one function per claim, from result tables to a
  :class:`~speechlens.findings.claims.Verdict`;
- :mod:`speechlens.findings.page`: collects the tables of a run, evaluates every claim, and
  writes ``findings.tsv`` and the report page.

Verdicts on synthetic speech and small models are indications, not replications; the page
says so.
"""

from speechlens.findings.claims import CLAIMS, VERDICTS, Verdict

__all__ = ["CLAIMS", "VERDICTS", "Verdict"]
