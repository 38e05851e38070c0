"""A node: one home's identity, its feeds (epoch keys and bundles) and the ledgers of its groups."""
