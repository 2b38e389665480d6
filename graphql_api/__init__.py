"""hybridrec: graphql_api."""
