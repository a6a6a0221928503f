"""Training loops (autoencoder pretraining, classifier heads) and device handling."""
