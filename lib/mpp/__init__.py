"""Marketing personalization platform: the shared library."""
