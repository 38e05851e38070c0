"""The Hearth terminal app (Textual). Imports ``hearth``; never imported by it."""
