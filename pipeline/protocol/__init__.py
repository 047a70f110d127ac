"""The Wald protocol: a reference degraded as a coarser sensor would see it, brought back by a
model, and scored against the reference. Training, evaluation and the benchmarks all follow it,
so it lives below them.

* :mod:`~pipeline.protocol.degradation`: the RGB stage's blind degradation (training draws its
  kernels; evaluation uses the reference's fixed validation one);
* :mod:`~pipeline.protocol.sensor`: the fusion stage's sensor degradation (blur, then mean);
* :mod:`~pipeline.protocol.wald`: each stage's degraded input to a 10 m reference;
* :mod:`~pipeline.protocol.split`: the held-out columns and their clear windows;
* :mod:`~pipeline.protocol.scores`: the band groups scored and the metrics of one image.
"""
