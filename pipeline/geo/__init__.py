"""Where the pixels are: the bands and their native resolutions, the 2.5 m grid and its tiles,
the resampling kernels and the halo wrapper that runs a block function over a chunked array.
Imports nothing else of the pipeline but its errors."""
