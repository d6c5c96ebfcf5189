"""One small module per slide backend (see ``docs/formats.md``: adding a backend)."""
