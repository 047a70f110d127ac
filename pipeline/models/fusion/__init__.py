"""DiffFuSR band fusion (paper III-B): the SR RGB guide lifts the other bands to 2.5 m."""
