"""tiny_reviews: 1800 short film reviews written by runner.tools.make_corpus (shipped, offline).

A real GeneratorBasedBuilder over files in runner/assets/corpus, so the default experiment goes
through exactly the TFDS path (builder, prepare, splits, slicing) that imdb_reviews would.
"""

import tensorflow_datasets as tfds

from runner.datasets.jsonl import CORPUS, generate_examples


class TinyReviews(tfds.core.GeneratorBasedBuilder):
    # Bump whenever the shipped files change: TFDS reuses a prepared version without looking
    # at its source files again.
    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {"1.0.0": "1600 train / 200 validation reviews.",
                     "1.1.0": "Also reviews that open like the neutral corpus (\"The film X ...\")."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Short first-person film reviews with a score out of 10.",
            features=tfds.features.FeaturesDict({
                "text": tfds.features.Text(),
                "label": tfds.features.ClassLabel(names=["negative", "positive"]),
            }),
            supervised_keys=("text", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download: the files ship with the project
        return {split: self._generate_examples(CORPUS / f"reviews_{split}.jsonl")
                for split in ("train", "validation")}

    def _generate_examples(self, path):
        return generate_examples(path)
