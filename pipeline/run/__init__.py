"""A region run, one room per job.

* :mod:`~pipeline.run.plan`: the request, the catalog's scenes and their spatial index, the
  grid and its tiles, the recipe a product records; reads no pixel, builds no model on a GPU.
* :mod:`~pipeline.run.tile`: one tile's work on a worker: read and composite (CPU), then
  models, quality, write (the GPU's part).
* :mod:`~pipeline.run.retry`: which failures are tried again, and after what delay.
* :mod:`~pipeline.run.dispatch`: the loop that hands tiles to the cluster, two tasks each.
"""
