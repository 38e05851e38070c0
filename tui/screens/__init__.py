"""The app's modal screens, one module each, with their styles in ``.tcss`` files beside
them. Each returns a typed result to whoever pushed it (``push_screen(screen, callback)``):
what the member chose, or ``None`` if they closed it."""
