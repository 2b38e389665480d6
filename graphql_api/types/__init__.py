"""GraphQL types, one per module, each built from its domain object by ``from_domain``."""
