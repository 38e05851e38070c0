"""Hearth: a shared ledger of resources and commitments for small groups.

Kept light on purpose: importing ``hearth`` loads nothing heavy. Start reading at
``hearth.node.node.open_node`` (how a node is put together) and ``hearth.ledger.automerge_doc``
(the one module that talks to Automerge).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
