"""The paper's evaluation metrics (Sec. 5.2, App. D): :mod:`evaluation.metrics`, and the
``streamingt2v evaluate`` command (:mod:`evaluation.cli`)."""
