"""Running models: BatchNorm folding, `Predictor`, TFLite, exports."""
