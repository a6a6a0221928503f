"""The aepipe Kubeflow pipeline: the DAG over the components and its cluster settings."""
