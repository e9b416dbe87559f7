"""Fine-tuning: data folders, tf.data pipelines, distribution."""
