"""tiny_prompts: 800 instruction/response records (shipped, offline) with the features of
databricks-dolly-15k (instruction, context, response, category; split train), the stand-in
for the QLoRA experiment's prompts dataset."""

import tensorflow_datasets as tfds

from runner.datasets.jsonl import CORPUS, generate_examples


class TinyPrompts(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")  # bump whenever the shipped files change
    RELEASE_NOTES = {"1.0.0": "800 train records."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Template-made instructions about the shipped corpus, with answers.",
            features=tfds.features.FeaturesDict({name: tfds.features.Text() for name in
                                                 ("instruction", "context", "response",
                                                  "category")}),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files ship with the project
        return {"train": self._generate_examples(CORPUS / "prompts_train.jsonl")}

    def _generate_examples(self, path):
        return generate_examples(path)
