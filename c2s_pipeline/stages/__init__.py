"""The c2s application: one module per pipeline stage plus the typer CLI."""
