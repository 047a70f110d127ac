"""Training of the DiffFuSR stages: data, degradation, the loops and their run directories.

``degradation`` (needs torch) turns HR patches into LR inputs the way DiffFuSR trains the RGB
model; ``sources`` (numpy only) yields HR RGB patches from an image folder or from Sentinel-2
itself, and builds the in-memory composites; ``sr`` trains the RGB model, ``fusion`` the
band-fusion networks, both through ``runs`` (checkpoints, log, exact resume).
"""
