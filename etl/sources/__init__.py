"""Sources of raw interactions and item metadata: MovieLens, generic CSV/Parquet, synthetic."""
