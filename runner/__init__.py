"""actlab: compare activation and loss functions with Keras, Hydra and MLflow."""
