"""Root resolvers: Query and Mutation (thin: graphql_api.service does the work)."""
