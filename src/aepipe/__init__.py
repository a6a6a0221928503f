"""aepipe: label-free image features (autoencoders) turned into reviewable classifiers.

Each stage is a plain function in :mod:`aepipe.stages`; the CLI (driven by ``dvc repro``) and the
Kubeflow components are thin wrappers around the same functions.
"""

__version__ = "0.1.0"
