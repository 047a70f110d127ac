"""Wald-protocol evaluation of registered models, shared by ``python -m flows.benchmark`` and
the scripts under ``benchmarks/``.

* :mod:`~pipeline.evaluation.data`: the clear 10 m patches of a STAC AOI or local scenes, and
  which bands are real or synthetic;
* :mod:`~pipeline.evaluation.wald`: each stage's degraded input;
* :mod:`~pipeline.evaluation.scores`: the metrics of one image (RGB: PSNR, SSIM, OpenSR-test;
  fusion: R², CC, SSIM, PSNR, MSE, ERGAS per band group);
* :mod:`~pipeline.evaluation.benchmark`: every model over every patch, as flat score records;
* :mod:`~pipeline.evaluation.report` and :mod:`~pipeline.evaluation.figures`: tables (CSV,
  markdown) and PNGs (figures need matplotlib, imported only there).
"""
