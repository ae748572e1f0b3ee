"""Retrieval quality against the catalogue's own labels, one concern per module.

* ``metrics``: what the numbers mean (precision@k, AP@k, micro and macro); pure functions.
* ``protocols``: leave-one-out and held-out runs over index vectors, which end in the metrics.
* ``report``: :class:`~recommender.evaluation.report.QualityReport` and how it is shown (tables,
  weakest types, per-type CSV, plain vs refined comparison).
* ``contact_sheet``: a PNG of queries and their results, to see the quality at a glance.

``scripts/evaluate.py`` wires them into the operator's command.
"""
