"""The stages that commands compose."""
