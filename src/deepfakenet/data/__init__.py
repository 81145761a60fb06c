"""Data: the embedded generator, the image tree with its hash split, and the datamodule."""
