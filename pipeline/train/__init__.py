"""Training of the DiffFuSR stages: data, the loops and their run directories.

``sources`` (numpy only) yields HR RGB patches from an image folder or from Sentinel-2 itself;
``sr`` trains the RGB model, ``fusion`` the band-fusion networks, both through ``runs``
(checkpoints, log, exact resume). How LR inputs are made and which columns are held out is the
Wald protocol's (:mod:`pipeline.protocol`), which evaluation follows too.
"""
