"""hybridrec: hybrid."""
