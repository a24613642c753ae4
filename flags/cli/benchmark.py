"""Speed of PART against AT, and of batched CAM budgets against per-image CAMs.

  python scripts/benchmark.py                      # small_cnn, 28x28x1, batch 128
  python scripts/benchmark.py --model=resnet18 --image_size=32 --channels=3
  python scripts/benchmark.py --compare_models=resnet18,preact_resnet18 \
      --image_size=32 --channels=3 --batch_size=64

--compare_models times only the compiled PART train step (CAM budgets on,
PGD-`num_steps` + update) of each listed architecture, --instances models
each, interleaved, and prints the medians and each model's step time over
the last one's (fastest models and median models), then stops. Otherwise the
benchmark prints medians over --repeats timed calls (after warm-up) and their
ratios:
  1. one compiled train step (PGD-`num_steps` + update) of AT and of PART
     (CAM budgets on): target PART / AT <= 1.10; and of the trade-off family
     (--family): ACT and part_act (a second, natural model: about 2x AT
     expected), and AT plus each plug-in regulariser (consistency trains on
     two views, so about 2x; feature alignment adds a clean forward pass);
  2. eps_map throughput: the batched in-graph path (GradCAM++ for the whole
     batch + resize + mask rule, in one tf.function) against calling
     tf-keras-vis once per image, eagerly, with `expand_cam=True` as its docs
     show: target >= 20x;
  3. the input pipeline alone (`part_tf.data.train_dataset`: shuffle, gather,
     crop + flip, batching) in images/s, against the PART train step's
     images/s at the same batch size: target >= 10x, so that data loading is
     not the bottleneck;
  4. the streamed pipeline (`part_tf.data.streaming.train_stream`: TFDS shards
     read from disk, PNG decoding, shuffle buffer, crop + flip, batching) in
     images/s, against the same train step: target >= 10x. By default the
     --pipeline_examples images are written as a TFDS dataset in a temporary
     folder first; --stream_dataset=tfds:NAME (with --stream_data_dir) times
     a prepared dataset instead;
  5. the evaluation attacks on one batch, in ms per example, with every
     attack doing its full work (no example fooled): PGD-20, APGD-CE, APGD-T,
     FAB-T and Square as AutoAttack runs them, the FAB-T / APGD-T ratio and
     what AutoAttack "standard" costs per example that survives it;
  6. the exported model's `serving_default` (loaded SavedModel, a request of
     --serving_batch_size images) with its in-graph input checks (shape, and
     pixels in [0, 1]) against the same export without them: target
     checked / unchecked <= 1.02. --serving_only runs this section alone:

  python scripts/benchmark.py --serving_only
  python scripts/benchmark.py --serving_only --model=resnet18 --image_size=32
      --channels=3 --repeats=5 --instances=2    (one line; ~7 s a call here)
  7. the presets aa_standard (AutoAttack standard) and aa_reference (the PART
     reference code's torchattacks 3.4.0 "AutoAttack", 10 iterations) on a
     trained model, as `evaluate.py --preset` runs them: the seconds of each
     attack (including its one-off tracing; medians over --aa_repeats runs,
     taken in turn), the accuracy after it and the examples it ran on, and
     the time ratio. The model is --aa_model_path, by default the quick
     start's PART model on the offline MNIST sample, trained first (about 2
     minutes); --aa_only runs this section alone:

       python scripts/benchmark.py --aa_only --aa_model_path=/tmp/qs_part
"""


from absl import flags

from part_tf import components  # pylint: disable=unused-import
from part_tf import registry
from part_tf_flags import define_plugins_flag  # pylint: disable=g-import-not-at-top
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf_flags import refuse_urls  # pylint: disable=g-import-not-at-top

# Plug-ins first: what they register becomes a choice of the flags below.
define_plugins_flag()
flags.DEFINE_enum("model", "small_cnn", registry.MODELS.names(), "Model.")
flags.DEFINE_list("compare_models", [], "Architectures whose PART train "
                  "steps to time against each other (e.g. resnet18,"
                  "preact_resnet18); only that comparison runs.")
flags.DEFINE_integer("image_size", 28, "Image height and width.")
flags.DEFINE_integer("channels", 1, "Image channels.")
flags.DEFINE_integer("num_classes", 10, "Classes.")
flags.DEFINE_integer("batch_size", 128, "Batch size.")
flags.DEFINE_integer("num_steps", 10, "PGD steps of the train step.")
flags.DEFINE_integer("repeats", 15, "Timed calls per measurement.")
flags.DEFINE_bool("family", True, "Also time ACT, part_act and AT with each "
                  "plug-in regulariser in section 1.")
flags.DEFINE_integer("instances", 4, "Independently built models per method.")
flags.DEFINE_integer("per_image_count", 32,
                     "Images timed on the per-image path (it is slow).")
flags.DEFINE_bool("jit_compile", False, "XLA (use on GPU).")
flags.DEFINE_integer("attack_repeats", 3, "Timed batches per evaluation "
                     "attack in section 5 (0 skips it).", lower_bound=0)
flags.DEFINE_integer("square_queries", 5000, "Square queries in section 5 "
                     "(AutoAttack's 5,000).", lower_bound=1)
flags.DEFINE_integer("pipeline_examples", 10000,
                     "In-memory examples fed through the input pipeline.")
flags.DEFINE_string("stream_dataset", None, "tfds:NAME of a prepared TFDS "
                    "dataset to time the streamed pipeline on (default: "
                    "--pipeline_examples random images written as one).")
flags.DEFINE_string("stream_data_dir", None, "Its TFDS data folder.")
flags.DEFINE_integer("serving_batch_size", 256, "Images per request in "
                     "section 6.", lower_bound=1)
flags.DEFINE_bool("serving_only", False, "Run only section 6 (the cost of "
                  "the exported model's input checks).")
flags.register_validator(
    "compare_models", lambda names: not names or (
        len(names) >= 2 and set(names) <= set(registry.MODELS.names())),
    message="--compare_models needs two or more of "
    f"{', '.join(registry.MODELS.names())}")
flags.DEFINE_integer("aa_examples", 500, "Test examples of the presets in "
                     "section 7 (0 skips it).", lower_bound=0)
flags.DEFINE_string("aa_model_path", None, "Run folder or .keras file of "
                    "section 7, a model of --aa_dataset (default: train the "
                    "quick start's PART model on mnist_offline, seed 0).")
flags.DEFINE_string("aa_dataset", "mnist_offline", "Dataset of section 7 "
                    "(default: the run folder's, else this).")
flags.DEFINE_integer("aa_repeats", 1, "Runs of each preset in section 7 "
                     "(medians).", lower_bound=1)
flags.DEFINE_bool("aa_only", False, "Run section 7 alone.")
refuse_urls("stream_data_dir", "aa_model_path")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  from part_tf import benchmarks  # pylint: disable=g-import-not-at-top
  s = FLAGS  # the sections read their settings from the flags by name
  shape = (s.image_size, s.image_size, s.channels)
  if s.serving_only:
    print(f"model={s.model} input={shape} "
          f"serving_batch={s.serving_batch_size}")
    benchmarks.serving_checks(s.model, shape, s.num_classes,
                              s.serving_batch_size, s.repeats, s.instances)
    return
  if s.aa_only:
    benchmarks.aa_presets(s)
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  x = rng.uniform(size=(s.batch_size, *shape)).astype(np.float32)
  y = rng.integers(0, s.num_classes, s.batch_size).astype(np.int32)
  print(f"model={','.join(s.compare_models) or s.model} input={shape} "
        f"batch={s.batch_size} pgd_steps={s.num_steps} "
        f"jit_compile={s.jit_compile} devices="
        f"{[d.device_type for d in tf.config.list_logical_devices()]}")
  if s.compare_models:
    benchmarks.compare_models(s, shape, x, y)
    return
  per_method = benchmarks.train_steps(s, shape, x, y)           # 1
  benchmarks.eps_map_throughput(s, shape, x)                    # 2
  step_ips = s.batch_size / per_method["part"][0]  # fastest PART model
  arrays, spec = benchmarks.pipeline_throughput(s, shape, step_ips)  # 3
  benchmarks.stream_throughput(s, shape, arrays, spec, step_ips)  # 4
  benchmarks.attack_costs(s, shape, x)                          # 5
  benchmarks.serving_checks(s.model, shape, s.num_classes,      # 6
                            s.serving_batch_size, s.repeats, s.instances)
  benchmarks.aa_presets(s)                                      # 7


def run():
  """The `part-benchmark` command (and `python scripts/benchmark.py`)."""
  run_command(main, dataset_defaults=False, doc=__doc__)


if __name__ == "__main__":
  run()
