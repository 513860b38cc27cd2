"""tiny_chats: 600 train_sft and 60 test_sft conversations (shipped, offline) with the features of
HuggingFaceH4/ultrachat_200k (prompt, messages: [{role, content}]), the stand-in for the chat
experiment's conversations."""

import tensorflow_datasets as tfds

from runner.datasets.jsonl import CORPUS, generate_examples


class TinyChats(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")  # bump whenever the shipped files change
    RELEASE_NOTES = {"1.0.0": "600 train_sft and 60 test_sft conversations."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Template-made conversations about the shipped corpus.",
            features=tfds.features.FeaturesDict({
                "prompt": tfds.features.Text(),
                "messages": tfds.features.Sequence({"role": tfds.features.Text(),
                                                    "content": tfds.features.Text()}),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files ship with the project
        return {split: self._generate_examples(CORPUS / f"chats_{split}.jsonl")
                for split in ("train_sft", "test_sft")}

    def _generate_examples(self, path):
        return generate_examples(path)
