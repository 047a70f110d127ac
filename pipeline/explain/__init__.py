"""Explaining a pixel: local attribution maps of the product's models at a window.

:mod:`.lam` is the attribution itself (a path integral of gradients along a progressive blur);
:mod:`.kernels` and :mod:`.differentiable` give each model a form that gradients go through;
:mod:`.target` rebuilds the models and the 10 m input around a window from what the product
records; :mod:`.explain` runs the stages; :mod:`.figures` and :mod:`.report` write the PNGs
and the JSON.
"""
