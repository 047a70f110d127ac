"""Wald-protocol evaluation of registered models, shared by ``python -m flows.benchmark`` and
the scripts under ``benchmarks/``. The protocol itself (each stage's degraded input, the
held-out split, the scores of one image) is :mod:`pipeline.protocol`, which training follows
too.

* :mod:`~pipeline.evaluation.data`: the clear 10 m patches of a STAC AOI or local scenes, and
  which bands are real or synthetic;
* :mod:`~pipeline.evaluation.benchmark`: every model over every patch, as flat score records;
* :mod:`~pipeline.evaluation.report` and :mod:`~pipeline.evaluation.figures`: tables (CSV,
  markdown) and PNGs (figures need matplotlib, imported only there).
"""
