"""The default experiment written by hand in Keras, as a researcher would without the runner:
the shipped tiny Gemma preset, a 2 x 4 mesh with GemmaBackbone's own layout map, LoRA rank 4,
AdamW (lr 2e-3, weight decay 0.01, none on bias/scale), the shipped tiny_reviews TFDS data,
batch 8 x 64 tokens. Prints one JSON line: step times after warm-up.

    python benchmarks/handwritten_keras.py --steps 200
"""

import json
import time

from baseline_common import PRESET, parse_args, set_environment, tiny_reviews_batches


def main():
    args = parse_args()
    set_environment()
    import keras
    import keras_hub

    keras.utils.set_random_seed(0)
    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((2, 4), ["batch", "model"], devices)
    layout_map = keras_hub.models.GemmaBackbone.get_layout_map(mesh)
    keras.distribution.set_distribution(
        keras.distribution.ModelParallel(layout_map=layout_map, batch_dim_name="batch"))

    gemma = keras_hub.models.GemmaCausalLM.from_preset(str(PRESET))
    gemma.backbone.enable_lora(rank=4)
    gemma.preprocessor.sequence_length = args.length

    data = tiny_reviews_batches(gemma.preprocessor, args.batch, args.steps)

    optimizer = keras.optimizers.AdamW(learning_rate=2e-3, weight_decay=0.01)
    optimizer.exclude_from_weight_decay(var_names=["bias", "scale"])
    gemma.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  optimizer=optimizer,
                  weighted_metrics=[keras.metrics.SparseCategoricalAccuracy()])
    gemma.preprocessor = None  # batches arrive preprocessed

    ends = []

    class Clock(keras.callbacks.Callback):
        """Wall time at the end of every step, once the step's loss is on the host."""

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # wait for the step, as any logging callback does
            ends.append(time.perf_counter())

    start = time.perf_counter()
    gemma.fit(data, epochs=1, steps_per_epoch=args.steps, callbacks=[Clock()], verbose=0)
    print(json.dumps({"name": "keras", "step_ends": [t - start for t in ends],
                      "tokens_per_step": args.batch * args.length}))


if __name__ == "__main__":
    main()
