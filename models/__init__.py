"""hybridrec: models."""
