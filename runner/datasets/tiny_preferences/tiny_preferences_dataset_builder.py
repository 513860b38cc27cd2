"""tiny_preferences: 480 train_prefs and 60 test_prefs preference pairs (shipped, offline) with
the features of HuggingFaceH4/ultrafeedback_binarized's train_prefs / test_prefs splits (prompt;
chosen and rejected: [{role, content}], the user's prompt then the assistant's answer;
score_chosen, score_rejected), the stand-in for the preference-tuning (DPO, ORPO, SimPO)
experiments' data. Each prompt asks for a short review of a film; the chosen answer is a review in
the shipped review set's style, the rejected one two encyclopedic sentences in the pretraining
corpus's style, off topic: a preference of style the tiny model can learn. Written by
runner/tools/make_corpus.py; no answer of test_prefs appears in train_prefs."""

import numpy as np
import tensorflow_datasets as tfds

from runner.datasets.jsonl import CORPUS, generate_examples


def _messages() -> tfds.features.Sequence:
    return tfds.features.Sequence({"role": tfds.features.Text(), "content": tfds.features.Text()})


class TinyPreferences(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")  # bump whenever the shipped files change
    RELEASE_NOTES = {"1.0.0": "480 train_prefs and 60 test_prefs preference pairs."}

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="Template-made preference pairs: film reviews chosen over off-topic "
                        "encyclopedic sentences.",
            features=tfds.features.FeaturesDict({
                "prompt": tfds.features.Text(),
                "chosen": _messages(),
                "rejected": _messages(),
                "score_chosen": tfds.features.Scalar(dtype=np.float32),
                "score_rejected": tfds.features.Scalar(dtype=np.float32),
            }),
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # the files ship with the project
        return {split: self._generate_examples(CORPUS / f"preferences_{split}.jsonl")
                for split in ("train_prefs", "test_prefs")}

    def _generate_examples(self, path):
        return generate_examples(path)
