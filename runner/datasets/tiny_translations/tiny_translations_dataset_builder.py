"""tiny_translations: 1400 English -> French sentence pairs (shipped, offline), with the
features and split names of TFDS `mtnt/en-fr` (src, dst; train, valid, test), so the
translation experiment's smoke run goes through the same config as the real one."""

import tensorflow_datasets as tfds

from runner.datasets.jsonl import CORPUS, generate_examples


class TinyTranslations(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")  # bump whenever the shipped files change
    RELEASE_NOTES = {"1.0.0": "1200 train / 100 valid / 100 test pairs."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Template-made English sentences and their French translations.",
            features=tfds.features.FeaturesDict({"src": tfds.features.Text(),
                                                 "dst": tfds.features.Text()}),
            supervised_keys=("src", "dst"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files ship with the project
        return {split: self._generate_examples(CORPUS / f"translations_{split}.jsonl")
                for split in ("train", "valid", "test")}

    def _generate_examples(self, path):
        return generate_examples(path)
