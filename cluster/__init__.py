"""hybridrec: cluster."""
