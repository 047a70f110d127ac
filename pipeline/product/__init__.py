"""The 2.5 m Zarr product: its variables, the store and its leases, the overview pyramid, the
STAC files, the end of a run and reading a product back."""
