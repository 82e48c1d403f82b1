"""The command line: one small module per command; no processing logic lives here."""
