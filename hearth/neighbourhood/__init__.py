"""Neighbourhoods: the signed records groups tell each other, a node's part in them, and what could
meet a need."""
