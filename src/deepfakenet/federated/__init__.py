"""Federated head updates: sites train the detector's head on their own vectors.

The Flower app is in ``federated/`` (README "Federated"); nothing in this package imports
Flower, so the service's environment can use it without Flower's pinned web stack.
"""
