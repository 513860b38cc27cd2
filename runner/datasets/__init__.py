"""TFDS builders for the datasets the project ships. Importing a builder module registers its
name with TFDS (that is how TFDS finds builders), so only runner.data imports them, on demand."""

SHIPPED = {"tiny_reviews": "runner.datasets.tiny_reviews.tiny_reviews_dataset_builder"}
