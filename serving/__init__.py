"""The HTTP service (BentoML) and its model import step."""
