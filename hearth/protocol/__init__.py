"""The wire: encoding, bundles, frames and the sans-IO connection and sync machines.

Nothing in this package does I/O, reads a clock or draws randomness on its own; the node
and the relay feed it bytes and events and carry out what it returns.
"""
