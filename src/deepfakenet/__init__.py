"""DeepFakeNet."""
