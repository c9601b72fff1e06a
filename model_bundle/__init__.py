"""model_bundle package."""
