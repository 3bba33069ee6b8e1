"""MNIST classification by predictive coding."""
