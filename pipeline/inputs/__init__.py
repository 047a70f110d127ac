"""From a STAC catalog to the 10 m composite a tile starts from: search, signing, lazy
loading, radiometry and the one clear-sky composite."""
