"""hybridrec: etl."""
