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

import dataclasses
import os
import statistics
import sys
import time

from absl import flags

from part_tf_flags import parse_flags_or_exit  # pylint: disable=g-import-not-at-top
from part_tf_flags import run_command  # pylint: disable=g-import-not-at-top
from part_tf_flags import refuse_urls  # pylint: disable=g-import-not-at-top
from part_tf_flags.train_flags import MODEL_NAMES  # pylint: disable=g-import-not-at-top

flags.DEFINE_enum("model", "small_cnn",
                  ("small_cnn", "resnet18", "preact_resnet18"), "Model.")
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
        len(names) >= 2 and set(names) <= set(MODEL_NAMES)),
    message=f"--compare_models needs two or more of {', '.join(MODEL_NAMES)}")
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
# The presets of section 6, in the order they run.
AA_PRESETS = ("aa_standard", "aa_reference")


def median_seconds(fn, repeats, warmup=3):
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def median_seconds_interleaved(fns, repeats, warmup=3):
  """Median seconds of each of several functions, called in turn."""
  for _ in range(warmup):
    for fn in fns.values():
      fn()
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}


def time_serving_checks(model_name, shape, num_classes, batch_size, repeats,
                        instances):
  """Section 6: serving_default with and without the export's input checks.

  Each variant is exported and loaded `instances` times (the same weights):
  on CPU a traced function's speed is bimodal for its lifetime (see section
  1), so all are timed in turn and the ratio is taken on the fastest and on
  the median instance. The check alone, in its own tf.function returning
  only the batch size, less the same function without the check, gives its
  absolute cost.
  """
  import tempfile  # pylint: disable=g-import-not-at-top
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from part_tf import export  # pylint: disable=g-import-not-at-top
  from part_tf.models import build_model  # pylint: disable=g-import-not-at-top

  keras.utils.set_random_seed(0)
  classifier = build_model(model_name, shape, num_classes)
  images = tf.constant(np.random.default_rng(1).uniform(
      size=(batch_size, *shape)).astype(np.float32))
  loaded, calls = [], {}
  with tempfile.TemporaryDirectory() as folder:
    for checked in (True, False):
      for instance in range(instances):
        path = export.export_classifier(
            classifier, os.path.join(folder, f"{checked}_{instance}"),
            check_inputs=checked)
        loaded.append(tf.saved_model.load(path))  # outlives its signature
        serving = loaded[-1].signatures["serving_default"]
        calls[(checked, instance)] = (
            lambda f=serving: f(images=images)["logits"].numpy())
    timed = median_seconds_interleaved(calls, repeats)
  alone = {"check": tf.function(
               lambda x: tf.shape(export.checked_pixels(x))[0]),
           "none": tf.function(lambda x: tf.shape(x)[0])}
  alone = median_seconds_interleaved(
      {n: (lambda f=f: f(images).numpy()) for n, f in alone.items()},
      max(repeats, 100))
  check_s = alone["check"] - alone["none"]
  per_variant = {checked: sorted(t for (c, _), t in timed.items()
                                 if c == checked) for checked in (True, False)}
  for checked, times in per_variant.items():
    print(f"serving_default {'with' if checked else 'without'} input checks, "
          f"medians per export (ms per {batch_size} images): "
          + ", ".join(f"{t * 1e3:.1f}" for t in times))
  fastest = per_variant[True][0] / per_variant[False][0]
  median = (statistics.median(per_variant[True]) /
            statistics.median(per_variant[False]))
  print(f"checked / unchecked serving time ratio: {fastest:.3f} fastest "
        f"exports, {median:.3f} median exports (target <= 1.02)")
  print(f"the pixel check alone: {check_s * 1e3:.2f} ms per {batch_size} "
        f"images, {check_s / per_variant[False][0]:.2%} of the fastest "
        "unchecked call")


def part_steps(build_model, names, shape, x, y, instances, jit_compile):
  """{(name, instance): one compiled PART train step (CAM budgets on) of a
  freshly built `name` classifier}, seeded by the instance."""
  import keras  # pylint: disable=g-import-not-at-top
  from part_tf.training import PARTModel  # pylint: disable=g-import-not-at-top
  steps = {}
  for name in names:
    for instance in range(instances):
      keras.utils.set_random_seed(instance)
      model = PARTModel(build_model(name, shape, FLAGS.num_classes),
                        method="part", epsilon=8 / 255, epsilon_low=4 / 255,
                        step_size=2 / 255, num_steps=FLAGS.num_steps)
      model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    jit_compile=jit_compile)
      model.part_active.assign(1)
      steps[(name, instance)] = lambda m=model: m.train_on_batch(x, y)
  return steps


def compare_models(build_model, shape, x, y):
  """Prints the PART step time of each of --compare_models: medians per
  model, and the ratio of each architecture to the last one listed."""
  names = FLAGS.compare_models
  timed = median_seconds_interleaved(
      part_steps(build_model, names, shape, x, y, FLAGS.instances,
                 FLAGS.jit_compile), FLAGS.repeats)
  per_model = {name: sorted(t for (n, _), t in timed.items() if n == name)
               for name in names}
  for name, times in per_model.items():
    print(f"PART train step  {name:16s} medians per model (ms): "
          + ", ".join(f"{t * 1e3:.1f}" for t in times))
  base = names[-1]
  for name in names[:-1]:
    fastest = per_model[name][0] / per_model[base][0]
    median = (statistics.median(per_model[name]) /
              statistics.median(per_model[base]))
    print(f"{name} / {base} step time ratio: {fastest:.3f} fastest models, "
          f"{median:.3f} median models")


def train_quick_start_model(model_dir):
  """Trains the quick start's PART model (mnist_offline's defaults, those of
  configs/mnist_offline.cfg, seed 0) into `model_dir`."""
  import subprocess  # pylint: disable=g-import-not-at-top
  command = [sys.executable, "-m", "part_tf.cli.train",
             f"--model_dir={model_dir}", "--dataset=mnist_offline",
             "--method=part", "--seed=0"]
  print("training the quick start's PART model: python "
        + " ".join(command[1:]), flush=True)
  done = subprocess.run(command, capture_output=True, text=True, check=False)
  if done.returncode:
    raise RuntimeError("training the model of section 7 failed: "
                       + done.stderr.strip()[-500:])


def preset_seconds(model_path, dataset, num_examples, repeats):
  """Runs the presets `AA_PRESETS` on a trained model, in turn `repeats`
  times.

  Returns:
    (epsilon, {preset: the report of its first run, with "seconds" per
    attack and "total_seconds" the medians over its runs}).
  """
  from part_tf import attack_suite  # pylint: disable=g-import-not-at-top
  from part_tf import data  # pylint: disable=g-import-not-at-top
  from part_tf import run_folder  # pylint: disable=g-import-not-at-top
  classifier, run, _ = run_folder.load_classifier(model_path)
  dataset = run.get("dataset") or dataset
  spec = data.spec_of_run(dataset, run.get("data_dir"), run)
  _, test, _ = data.load(dataset, data_dir=run.get("data_dir"),
                         max_test=num_examples, max_train=1, spec=spec)
  epsilon = run.get("eval_epsilon") or run.get("epsilon", 8 / 255)
  model_fn = lambda x: classifier(x, training=False)
  test_ds = data.eval_dataset(test, 256)
  runs = {name: [] for name in AA_PRESETS}
  for _ in range(repeats):
    for name in AA_PRESETS:
      preset = attack_suite.PRESETS[name]
      start = time.perf_counter()
      report = attack_suite.evaluate_sequence(
          model_fn, test_ds, epsilon, preset.attacks, preset.config)
      report["total_seconds"] = time.perf_counter() - start
      runs[name].append(report)
  reports = {}
  for name, done in runs.items():
    report = dict(done[0])
    report["seconds"] = {a: statistics.median(r["seconds"][a] for r in done)
                         for a in report["seconds"]}
    report["total_seconds"] = statistics.median(
        r["total_seconds"] for r in done)
    reports[name] = report
  return epsilon, reports


def print_presets(model_path, epsilon, reports, repeats):
  """Prints section 7: per preset, each attack's seconds, the accuracy after
  it and the examples it ran on; then the time ratio."""
  from part_tf import attack_suite  # pylint: disable=g-import-not-at-top
  first = next(iter(reports.values()))
  print(f"presets on {model_path}: {first['num_examples']} examples, "
        f"epsilon {epsilon:.4g}, natural accuracy "
        f"{first['natural_accuracy']:.4f}; seconds include each attack's "
        f"tracing (median of {repeats} run{'s' * (repeats > 1)})")
  for name, report in reports.items():
    preset = attack_suite.PRESETS[name]
    for attack in preset.attacks:
      print(f"  {name:12s} {attack:8s} {report['seconds'][attack]:8.1f} s  "
            f"accuracy after it {report['robust_accuracy'][attack]:.4f}  "
            f"({report['examples_attacked'][attack]} attacked)")
    print(f"  {name:12s} total    {report['total_seconds']:8.1f} s  "
          f"{preset.final} accuracy {report['worst_case_accuracy']:.4f}")
  standard, reference = (reports[n]["total_seconds"] for n in AA_PRESETS)
  print(f"aa_standard / aa_reference time ratio: {standard / reference:.2f}")


def aa_presets_section():
  """Section 7 (see the module docstring)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  if not FLAGS.aa_examples:
    return
  with tempfile.TemporaryDirectory() as folder:
    model_path = FLAGS.aa_model_path
    if model_path is None:
      model_path = os.path.join(folder, "quick_start_part")
      train_quick_start_model(model_path)
    epsilon, reports = preset_seconds(model_path, FLAGS.aa_dataset,
                                      FLAGS.aa_examples, FLAGS.aa_repeats)
  print_presets(FLAGS.aa_model_path or "the quick start's PART model",
                epsilon, reports, FLAGS.aa_repeats)


def main(argv):
  del argv
  shape = (FLAGS.image_size, FLAGS.image_size, FLAGS.channels)
  if FLAGS.serving_only:
    print(f"model={FLAGS.model} input={shape} "
          f"serving_batch={FLAGS.serving_batch_size}")
    time_serving_checks(FLAGS.model, shape, FLAGS.num_classes,
                        FLAGS.serving_batch_size, FLAGS.repeats,
                        FLAGS.instances)
    return
  if FLAGS.aa_only:
    aa_presets_section()
    return
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus  # pylint: disable=g-import-not-at-top
  from tf_keras_vis.utils.scores import CategoricalScore  # pylint: disable=g-import-not-at-top

  from part_tf.cam import ClassActivationMaps  # pylint: disable=g-import-not-at-top
  from part_tf.cam import eps_map_from_cam  # pylint: disable=g-import-not-at-top
  from part_tf.models import build_model  # pylint: disable=g-import-not-at-top
  from part_tf.models import CAM_LAYER  # pylint: disable=g-import-not-at-top
  from part_tf.training import PARTModel  # pylint: disable=g-import-not-at-top

  rng = np.random.default_rng(0)
  x = rng.uniform(size=(FLAGS.batch_size, *shape)).astype(np.float32)
  y = rng.integers(0, FLAGS.num_classes, FLAGS.batch_size).astype(np.int32)
  models = ",".join(FLAGS.compare_models) or FLAGS.model
  print(f"model={models} input={shape} batch={FLAGS.batch_size} "
        f"pgd_steps={FLAGS.num_steps} jit_compile={FLAGS.jit_compile} "
        f"devices={[d.device_type for d in tf.config.list_logical_devices()]}")
  if FLAGS.compare_models:
    compare_models(build_model, shape, x, y)
    return

  # --- 1. Train step: AT vs PART -------------------------------------------
  # On CPU with oneDNN, the speed of a compiled step is bimodal (~1.6x apart)
  # per traced function, fixed for the life of that function, whatever its
  # content (seen on this project's 2-core machines). So each method gets
  # several independently built models, all timed in turn (drift hits all
  # alike), and the ratio is taken both on each method's fastest model and
  # on the median over its models.
  variants = {"at": ("at", {}), "part": ("part", {})}
  if FLAGS.family:
    variants.update({
        "act": ("act", {}), "part_act": ("part_act", {}),
        "at+consistency": ("at", {"consistency_weight": 1.0}),
        "at+feature_alignment": ("at", {"feature_alignment_weight": 0.1}),
        "at+center_loss": ("at", {"center_loss_weight": 0.003})})
  x_views = np.stack([x, x[:, :, ::-1]], axis=1)  # two "augmented" views
  steps = {}
  for name, (method, extra) in variants.items():
    for instance in range(FLAGS.instances):
      keras.utils.set_random_seed(instance)
      classifier = build_model(FLAGS.model, shape, FLAGS.num_classes)
      if method in ("act", "part_act"):
        extra = {**extra, "natural_classifier": build_model(
            FLAGS.model, shape, FLAGS.num_classes)}
      model = PARTModel(classifier, method=method, epsilon=8 / 255,
                        epsilon_low=4 / 255, step_size=2 / 255,
                        num_steps=FLAGS.num_steps, **extra)
      model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    jit_compile=FLAGS.jit_compile)
      model.part_active.assign(1)
      batch = x_views if "consistency_weight" in extra else x
      steps[(name, instance)] = (
          lambda m=model, b=batch: m.train_on_batch(b, y))
  timed = median_seconds_interleaved(steps, FLAGS.repeats)
  per_method = {
      name: sorted(t for (m, _), t in timed.items() if m == name)
      for name in variants}
  for method, times in per_method.items():
    print(f"train step  {method:20s} medians per model (ms): "
          + ", ".join(f"{t * 1e3:.1f}" for t in times))
  best = per_method["part"][0] / per_method["at"][0]
  typical = (statistics.median(per_method["part"]) /
             statistics.median(per_method["at"]))
  print(f"PART / AT step time ratio: {best:.3f} fastest models, "
        f"{typical:.3f} median models (target <= 1.10)")
  for name in variants:  # the family against its base
    if name in ("at", "part"):
      continue
    base = "act" if name == "part_act" else "at"
    fastest = per_method[name][0] / per_method[base][0]
    median = (statistics.median(per_method[name]) /
              statistics.median(per_method[base]))
    print(f"{name} / {base} step time ratio: {fastest:.3f} fastest models, "
          f"{median:.3f} median models")
  classifier = build_model(FLAGS.model, shape, FLAGS.num_classes)

  # --- 2. eps_map throughput: batched in-graph vs per image ----------------
  cams = ClassActivationMaps(classifier)
  batched = tf.function(
      lambda images: eps_map_from_cam(cams(images), shape, 8 / 255, 4 / 255),
      jit_compile=FLAGS.jit_compile)
  xt = tf.constant(x)
  batched_s = median_seconds(lambda: batched(xt).numpy(), FLAGS.repeats)
  batched_ips = FLAGS.batch_size / batched_s

  visualizer = GradcamPlusPlus(classifier)
  count = FLAGS.per_image_count

  def per_image():
    for image in x[:count]:
      predicted = int(np.argmax(classifier(image[None]).numpy()))
      visualizer(CategoricalScore(predicted), image,
                 penultimate_layer=CAM_LAYER,
                 seek_penultimate_conv_layer=False)

  per_image_s = median_seconds(per_image, max(3, FLAGS.repeats // 5),
                               warmup=1)
  per_image_ips = count / per_image_s
  print(f"eps_map batched in-graph: {batched_ips:10.1f} images/s "
        f"(median {batched_s * 1e3:.1f} ms per batch of {FLAGS.batch_size})")
  print(f"CAM per image (eager tf-keras-vis): {per_image_ips:10.1f} images/s "
        f"(median {per_image_s * 1e3:.1f} ms per {count} images)")
  print(f"batched / per-image throughput ratio: "
        f"{batched_ips / per_image_ips:.1f}x (target >= 20x)")

  # --- 3. Input pipeline vs train step -------------------------------------
  from part_tf import data  # pylint: disable=g-import-not-at-top
  spec = dataclasses.replace(data.DATASETS["cifar10"], image_shape=shape)
  pixels = rng.integers(0, 256, (FLAGS.pipeline_examples, *shape), np.uint8)
  arrays = data.ArrayData(pixels, rng.integers(
      0, FLAGS.num_classes, FLAGS.pipeline_examples).astype(np.int32))
  pipeline = data.train_dataset(arrays, spec, FLAGS.batch_size, seed=0,
                                start_epoch=0, epochs=1000)
  iterator = iter(pipeline)
  next(iterator)
  batches = data.steps_per_epoch(arrays, FLAGS.batch_size)

  def one_epoch():
    for _ in range(batches):
      next(iterator)

  pipeline_s = median_seconds(one_epoch, max(3, FLAGS.repeats // 3), warmup=1)
  pipeline_ips = batches * FLAGS.batch_size / pipeline_s
  step_ips = FLAGS.batch_size / per_method["part"][0]  # fastest PART model
  print(f"input pipeline (crop + flip): {pipeline_ips:10.1f} images/s")
  print(f"PART train step:              {step_ips:10.1f} images/s")
  print(f"pipeline / train step throughput ratio: {pipeline_ips / step_ips:.1f}x"
        " (target >= 10x)")

  # --- 4. Streamed pipeline (TFDS shards on disk) vs train step -------------
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from part_tf.data import streaming  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as folder:
    if FLAGS.stream_dataset:
      name, data_dir = FLAGS.stream_dataset, FLAGS.stream_data_dir
      stream_spec = data.resolve_spec(name, data_dir)
    else:
      name, data_dir = "tfds:benchmark_images", folder
      features = tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=shape),
          "label": tfds.features.ClassLabel(num_classes=FLAGS.num_classes)})
      split = tf.data.Dataset.from_tensor_slices(
          {"image": arrays.images, "label": arrays.labels.astype(np.int64)})
      tfds.dataset_builders.store_as_tfds_dataset(
          name="benchmark_images", version="1.0.0", features=features,
          split_datasets={"train": split}, data_dir=folder, config=None)
      stream_spec = data.resolve_spec(name, data_dir,
                                      mean=[0.5] * shape[-1],
                                      std=[0.25] * shape[-1])
      stream_spec = dataclasses.replace(stream_spec,
                                        crop_padding=spec.crop_padding)
    examples = streaming.num_examples(stream_spec, "train", data_dir)
    stream_batches = examples // FLAGS.batch_size
    stream = iter(streaming.train_stream(stream_spec, FLAGS.batch_size, seed=0,
                                         data_dir=data_dir))
    next(stream)

    def one_pass():
      for _ in range(stream_batches):
        next(stream)

    stream_s = median_seconds(one_pass, max(3, FLAGS.repeats // 5), warmup=1)
  stream_ips = stream_batches * FLAGS.batch_size / stream_s
  print(f"streamed pipeline ({name}, PNG decode + crop + flip): "
        f"{stream_ips:10.1f} images/s")
  print(f"streamed pipeline / train step throughput ratio: "
        f"{stream_ips / step_ips:.1f}x (target >= 10x)")

  # --- 5. The evaluation attacks, per batch of still-robust examples -------
  if FLAGS.attack_repeats:
    from part_tf import attacks  # pylint: disable=g-import-not-at-top
    model_fn = lambda z: classifier(z, training=False)
    xt = tf.constant(x)
    # Labels the model gets right, and a budget too small to fool anything:
    # every attack does its full work (all 9 targets, no early stop), as on
    # the examples of a robust model that survive to the end.
    yt = tf.argmax(model_fn(xt), axis=-1, output_type=tf.int32)
    eps = 1e-4
    runs = {
        "pgd20": lambda: attacks.pgd(model_fn, xt, yt, eps, eps / 4, 20),
        "apgd_ce": lambda: attacks.apgd(model_fn, xt, yt, eps, num_steps=100),
        "apgd_t": lambda: attacks.apgd_targeted(model_fn, xt, yt, eps,
                                                num_steps=100, num_targets=9),
        "fab_t": lambda: attacks.fab(model_fn, xt, yt, eps, num_steps=100,
                                     num_targets=9),
        "square": lambda: attacks.square(model_fn, xt, yt, eps,
                                         num_queries=FLAGS.square_queries,
                                         rescale_schedule=False)}
    compiled = {n: tf.function(f) for n, f in runs.items()}
    timed = median_seconds_interleaved(
        {n: (lambda f=f: f().numpy()) for n, f in compiled.items()},
        FLAGS.attack_repeats, warmup=1)
    for name, seconds in timed.items():
      print(f"attack {name:8s} {seconds * 1e3 / FLAGS.batch_size:8.2f} ms "
            f"per example (median of {FLAGS.attack_repeats} batches)")
    print(f"FAB-T / APGD-T time ratio: {timed['fab_t'] / timed['apgd_t']:.2f} "
          "(about 2 expected: FAB makes a forward pass more per iteration)")
    standard = sum(timed[n] for n in ("apgd_ce", "apgd_t", "fab_t",
                                      "square"))
    print(f"AutoAttack standard per still-robust example: "
          f"{standard / FLAGS.batch_size:.3f} s ({FLAGS.square_queries} "
          f"Square queries), {standard / timed['pgd20']:.0f}x PGD-20")

  # --- 6. The served model's input checks -----------------------------------
  time_serving_checks(FLAGS.model, shape, FLAGS.num_classes,
                      FLAGS.serving_batch_size, FLAGS.repeats, FLAGS.instances)
  # --- 7. The AutoAttack presets on a trained model ------------------------
  aa_presets_section()


def run():
  """The `part-benchmark` command (and `python scripts/benchmark.py`)."""
  # absl prints the main module's docstring as the usage: this one.
  sys.modules["__main__"].__doc__ = __doc__
  run_command(main, lambda argv: parse_flags_or_exit(
      argv, dataset_defaults=False))


if __name__ == "__main__":
  run()
