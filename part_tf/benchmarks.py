"""The benchmark's sections (`scripts/benchmark.py` runs them in order and
prints medians and ratios): each builds what it times, times it with
`median_seconds` or `median_seconds_interleaved`, and prints its lines.

On CPU with oneDNN the speed of a compiled step is bimodal (about 1.6x
apart) per traced function, fixed for the life of that function whatever its
content: so the sections that compare steps build several independent models
per variant, time them all in turn (drift hits all alike), and give the
ratio on the fastest and on the median model.
"""

import dataclasses
import os
import statistics
import sys
import time

# The presets of section 7, in the order they run.
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


def train_steps(s, shape, x, y) -> dict:
  """Section 1: {method: sorted medians per model} of the compiled train
  steps, printed with their ratios."""
  import keras  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from part_tf.models import build_model  # pylint: disable=g-import-not-at-top
  from part_tf import regularisers  # pylint: disable=g-import-not-at-top
  from part_tf.training import PARTModel  # pylint: disable=g-import-not-at-top
  # --- 1. Train step: AT vs PART -------------------------------------------
  # On CPU with oneDNN, the speed of a compiled step is bimodal (~1.6x apart)
  # per traced function, fixed for the life of that function, whatever its
  # content (seen on this project's 2-core machines). So each method gets
  # several independently built models, all timed in turn (drift hits all
  # alike), and the ratio is taken both on each method's fastest model and
  # on the median over its models.
  variants = {"at": ("at", {}), "part": ("part", {})}
  if s.family:
    variants.update({
        "act": ("act", {}), "part_act": ("part_act", {}),
        "at+consistency": ("at", {"regularisers": [
            regularisers.Consistency(weight=1.0)]}),
        "at+feature_alignment": ("at", {"regularisers": [
            regularisers.FeatureAlignment(weight=0.1)]}),
        "at+center_loss": ("at", {"regularisers": [
            regularisers.CenterLoss(weight=0.003)]})})
  x_views = np.stack([x, x[:, :, ::-1]], axis=1)  # two "augmented" views
  steps = {}
  for name, (method, extra) in variants.items():
    for instance in range(s.instances):
      keras.utils.set_random_seed(instance)
      classifier = build_model(s.model, shape, s.num_classes)
      if method in ("act", "part_act"):
        extra = {**extra, "natural_classifier": build_model(
            s.model, shape, s.num_classes)}
      model = PARTModel(classifier, method=method, epsilon=8 / 255,
                        epsilon_low=4 / 255, step_size=2 / 255,
                        num_steps=s.num_steps, burn_in_epochs=0, **extra)
      model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    jit_compile=s.jit_compile)
      batch = x_views if model._views > 1 else x  # pylint: disable=protected-access
      steps[(name, instance)] = (
          lambda m=model, b=batch: m.train_on_batch(b, y))
  timed = median_seconds_interleaved(steps, s.repeats)
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
  return per_method


def eps_map_throughput(s, shape, x):
  """Section 2: the batched in-graph eps_map against tf-keras-vis per
  image."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_keras_vis.gradcam_plus_plus import GradcamPlusPlus  # pylint: disable=g-import-not-at-top
  from tf_keras_vis.utils.scores import CategoricalScore  # pylint: disable=g-import-not-at-top
  from part_tf.cam import CAM_LAYER  # pylint: disable=g-import-not-at-top
  from part_tf.cam import ClassActivationMaps  # pylint: disable=g-import-not-at-top
  from part_tf.cam import eps_map_from_cam  # pylint: disable=g-import-not-at-top
  from part_tf.models import build_model  # pylint: disable=g-import-not-at-top
  classifier = build_model(s.model, shape, s.num_classes)
  cams = ClassActivationMaps(classifier)
  batched = tf.function(
      lambda images: eps_map_from_cam(cams(images), shape, 8 / 255, 4 / 255),
      jit_compile=s.jit_compile)
  xt = tf.constant(x)
  batched_s = median_seconds(lambda: batched(xt).numpy(), s.repeats)
  batched_ips = s.batch_size / batched_s

  visualizer = GradcamPlusPlus(classifier)
  count = s.per_image_count

  def per_image():
    for image in x[:count]:
      predicted = int(np.argmax(classifier(image[None]).numpy()))
      visualizer(CategoricalScore(predicted), image,
                 penultimate_layer=CAM_LAYER,
                 seek_penultimate_conv_layer=False)

  per_image_s = median_seconds(per_image, max(3, s.repeats // 5),
                               warmup=1)
  per_image_ips = count / per_image_s
  print(f"eps_map batched in-graph: {batched_ips:10.1f} images/s "
        f"(median {batched_s * 1e3:.1f} ms per batch of {s.batch_size})")
  print(f"CAM per image (eager tf-keras-vis): {per_image_ips:10.1f} images/s "
        f"(median {per_image_s * 1e3:.1f} ms per {count} images)")
  print(f"batched / per-image throughput ratio: "
        f"{batched_ips / per_image_ips:.1f}x (target >= 20x)")



def pipeline_throughput(s, shape, step_ips) -> "data.ArrayData":
  """Section 3: the in-memory input pipeline against the train step's
  images/s; returns the images it used (section 4 writes them)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  from part_tf import data  # pylint: disable=g-import-not-at-top
  spec = dataclasses.replace(data.DATASETS.get("cifar10"), image_shape=shape)
  pixels = rng.integers(0, 256, (s.pipeline_examples, *shape), np.uint8)
  arrays = data.ArrayData(pixels, rng.integers(
      0, s.num_classes, s.pipeline_examples).astype(np.int32))
  pipeline = data.train_dataset(arrays, spec, s.batch_size, seed=0,
                                start_epoch=0, epochs=1000)
  iterator = iter(pipeline)
  next(iterator)
  batches = data.steps_per_epoch(arrays, s.batch_size)

  def one_epoch():
    for _ in range(batches):
      next(iterator)

  pipeline_s = median_seconds(one_epoch, max(3, s.repeats // 3), warmup=1)
  pipeline_ips = batches * s.batch_size / pipeline_s
  print(f"input pipeline (crop + flip): {pipeline_ips:10.1f} images/s")
  print(f"PART train step:              {step_ips:10.1f} images/s")
  print(f"pipeline / train step throughput ratio: {pipeline_ips / step_ips:.1f}x"
        " (target >= 10x)")

  return arrays, spec


def stream_throughput(s, shape, arrays, spec, step_ips):
  """Section 4: the streamed pipeline (TFDS shards on disk) against the
  train step's images/s."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from part_tf import data  # pylint: disable=g-import-not-at-top
  import tempfile  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from part_tf.data import streaming  # pylint: disable=g-import-not-at-top
  with tempfile.TemporaryDirectory() as folder:
    if s.stream_dataset:
      name, data_dir = s.stream_dataset, s.stream_data_dir
      stream_spec = data.resolve_spec(name, data_dir)
    else:
      name, data_dir = "tfds:benchmark_images", folder
      features = tfds.features.FeaturesDict({
          "image": tfds.features.Image(shape=shape),
          "label": tfds.features.ClassLabel(num_classes=s.num_classes)})
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
    stream_batches = examples // s.batch_size
    stream = iter(streaming.train_stream(stream_spec, s.batch_size, seed=0,
                                         data_dir=data_dir))
    next(stream)

    def one_pass():
      for _ in range(stream_batches):
        next(stream)

    stream_s = median_seconds(one_pass, max(3, s.repeats // 5), warmup=1)
  stream_ips = stream_batches * s.batch_size / stream_s
  print(f"streamed pipeline ({name}, PNG decode + crop + flip): "
        f"{stream_ips:10.1f} images/s")
  print(f"streamed pipeline / train step throughput ratio: "
        f"{stream_ips / step_ips:.1f}x (target >= 10x)")



def attack_costs(s, shape, x):
  """Section 5: the evaluation attacks doing their full work on a batch."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from part_tf import attacks  # pylint: disable=g-import-not-at-top
  from part_tf.models import build_model  # pylint: disable=g-import-not-at-top
  classifier = build_model(s.model, shape, s.num_classes)
  if s.attack_repeats:
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
                                         num_queries=s.square_queries,
                                         rescale_schedule=False)}
    compiled = {n: tf.function(f) for n, f in runs.items()}
    timed = median_seconds_interleaved(
        {n: (lambda f=f: f().numpy()) for n, f in compiled.items()},
        s.attack_repeats, warmup=1)
    for name, seconds in timed.items():
      print(f"attack {name:8s} {seconds * 1e3 / s.batch_size:8.2f} ms "
            f"per example (median of {s.attack_repeats} batches)")
    print(f"FAB-T / APGD-T time ratio: {timed['fab_t'] / timed['apgd_t']:.2f} "
          "(about 2 expected: FAB makes a forward pass more per iteration)")
    standard = sum(timed[n] for n in ("apgd_ce", "apgd_t", "fab_t",
                                      "square"))
    print(f"AutoAttack standard per still-robust example: "
          f"{standard / s.batch_size:.3f} s ({s.square_queries} "
          f"Square queries), {standard / timed['pgd20']:.0f}x PGD-20")



def serving_checks(model_name, shape, num_classes, batch_size, repeats,
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


def part_steps(s, names, shape, x, y):
  """{(name, instance): one compiled PART train step (CAM budgets on) of a
  freshly built `name` classifier}, seeded by the instance."""
  import keras  # pylint: disable=g-import-not-at-top
  from part_tf.models import build_model  # pylint: disable=g-import-not-at-top
  from part_tf.training import PARTModel  # pylint: disable=g-import-not-at-top
  steps = {}
  for name in names:
    for instance in range(s.instances):
      keras.utils.set_random_seed(instance)
      model = PARTModel(build_model(name, shape, s.num_classes),
                        method="part", epsilon=8 / 255, epsilon_low=4 / 255,
                        step_size=2 / 255, num_steps=s.num_steps)
      model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    jit_compile=s.jit_compile)
      steps[(name, instance)] = lambda m=model: m.train_on_batch(x, y)
  return steps


def compare_models(s, shape, x, y):
  """Prints the PART step time of each of --compare_models: medians per
  model, and the ratio of each architecture to the last one listed."""
  names = s.compare_models
  timed = median_seconds_interleaved(
      part_steps(s, names, shape, x, y), s.repeats)
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
  command = [sys.executable, "-m", "part_tf_flags.cli.train",
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


def aa_presets(s):
  """Section 7 (see the module docstring)."""
  import tempfile  # pylint: disable=g-import-not-at-top
  if not s.aa_examples:
    return
  with tempfile.TemporaryDirectory() as folder:
    model_path = s.aa_model_path
    if model_path is None:
      model_path = os.path.join(folder, "quick_start_part")
      train_quick_start_model(model_path)
    epsilon, reports = preset_seconds(model_path, s.aa_dataset,
                                      s.aa_examples, s.aa_repeats)
  print_presets(s.aa_model_path or "the quick start's PART model",
                epsilon, reports, s.aa_repeats)


