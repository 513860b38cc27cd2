"""TFDS builders for the datasets the project ships. Importing a builder module registers its
name with TFDS (that is how TFDS finds builders), so only runner.data imports them, on demand."""

SHIPPED = {
    "tiny_reviews": "runner.datasets.tiny_reviews.tiny_reviews_dataset_builder",
    "tiny_translations": "runner.datasets.tiny_translations.tiny_translations_dataset_builder",
    "tiny_prompts": "runner.datasets.tiny_prompts.tiny_prompts_dataset_builder",
    "tiny_chats": "runner.datasets.tiny_chats.tiny_chats_dataset_builder",
    "tiny_preferences": "runner.datasets.tiny_preferences.tiny_preferences_dataset_builder",
}
