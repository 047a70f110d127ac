"""Training data for the RGB diffusion stage: the degradation model and the HR patch sources.

``degradation`` (needs torch) turns HR patches into LR inputs the way DiffFuSR trains;
``sources`` (numpy only) yields HR RGB patches from an image folder or from Sentinel-2 itself.
"""
