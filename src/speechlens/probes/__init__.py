"""Probe estimators that scikit-learn does not ship (see :mod:`speechlens.probing`)."""
