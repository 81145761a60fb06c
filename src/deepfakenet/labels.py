"""The class labels and their targets: the one place that names them (0 = real, 1 = fake).

A module of its own, importing nothing, so that code without the model (the store, the
dashboards' pages) can name the labels without importing torch and Lightning. The data tree's
class folders (``data/real``, ``data/fake``), the generator's output, the logits' columns, the
store's labels and the service's answers all read these names, so they can never disagree.
"""

#: Label of a camera photo, class folder ``data/real``; logit column and target 0.
REAL_LABEL = "real"
#: Label of a generated image, class folder ``data/fake``; logit column and target 1.
FAKE_LABEL = "fake"
#: Every label, in target order: ``LABELS[target]`` is the label, ``prob_fake`` is P(target 1).
LABELS: tuple[str, str] = (REAL_LABEL, FAKE_LABEL)
#: Targets of the two classes (their index in :data:`LABELS`).
REAL_TARGET = LABELS.index(REAL_LABEL)
FAKE_TARGET = LABELS.index(FAKE_LABEL)
