"""The class labels, in target order (0 = real, 1 = fake; ``data.split.CLASSES`` matches).

A module of its own so that torch-free code (the store, the dashboards) can name the labels
without importing the model, and with it torch and Lightning.
"""

LABELS: tuple[str, str] = ("real", "fake")
