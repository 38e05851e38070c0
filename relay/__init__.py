"""The Hearth relay: stores and forwards encrypted bundles for any number of groups."""
