"""Video tests (a package: its test_probe/test_decode share basenames with tests/images)."""
