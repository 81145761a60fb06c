"""DeepFakeNet's Flower app: thin wrappers around :mod:`deepfakenet.federated`."""
