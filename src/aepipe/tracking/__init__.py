"""MLflow: run lineage, the encoder+classifier pyfunc model, the registry."""
