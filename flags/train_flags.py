"""Flags of scripts/train.py, with validators that turn bad values into a
one-line error before anything is loaded or written.

Names are the lists of the library, so `--helpfull` shows every choice.
"""

import os

from absl import flags

from . import refuse_urls
from .budgets import DEFINE_budget

# Copies of the library's names, so that parsing flags does not import
# TensorFlow; tests/test_flags.py checks that they stay equal.
DATASET_NAMES = ("cifar10", "cifar100", "fashion_mnist", "mnist",
                 "mnist_offline", "svhn_cropped", "tiny_imagenet")
MODEL_NAMES = ("resnet18", "small_cnn", "wrn28_10", "wrn34_10")
METHOD_NAMES = ("at", "part", "trades", "part_t", "mart", "part_m", "act",
                "part_act")
REWEIGHTED_METHODS = ("part", "part_t", "part_m", "part_act")
CONCURRENT_METHODS = ("act", "part_act")
ATTACKS = ("pgd", "mma")
CAM_METHODS = ("gradcam_plus_plus", "gradcam", "layercam", "xgradcam")
MASK_RULES = ("zscore", "official", "soft")
STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
TFDS_PREFIX = "tfds:"


# Names of the flags `define_flags` defines (filled in by it).
FLAG_NAMES = ()


def define_flags():
  """Defines the training flags on `absl.flags.FLAGS`."""
  global FLAG_NAMES
  before = set(flags.FLAGS)
  # Data.
  flags.DEFINE_string("dataset", "mnist_offline",
                      f"One of {', '.join(DATASET_NAMES)} (mnist_offline "
                      "needs no network), or tfds:NAME for any TFDS image "
                      "classification dataset, e.g. tfds:imagenette or "
                      "tfds:imagenet_resized/64x64 (see --image_size, "
                      "--num_classes, --mean, --std).")
  flags.DEFINE_integer("image_size", None, "tfds:NAME: resize images to this "
                       "height and width (a centred square crop first); "
                       "needed when the dataset's images differ in size.",
                       lower_bound=8)
  flags.DEFINE_integer("num_classes", None, "tfds:NAME: number of classes "
                       "(default: read from the dataset's label feature).",
                       lower_bound=2)
  flags.DEFINE_list("mean", None, "tfds:NAME: per-channel mean of the images "
                    "in [0, 1] (default: measured on up to 10,000 training "
                    "images).")
  flags.DEFINE_list("std", None, "tfds:NAME: per-channel standard deviation "
                    "in [0, 1] (default: measured like --mean).")
  flags.DEFINE_enum("input", "auto", ("auto", "memory", "stream"),
                    "memory: decode the dataset into memory once; stream: "
                    "read TFDS shards and decode and augment inside tf.data; "
                    "auto: stream when the decoded training split would "
                    "pass --input_memory_budget.")
  flags.DEFINE_float("input_memory_budget", 4.0, "GB of decoded training "
                     "images that --input=auto holds in memory.",
                     lower_bound=0.0)
  flags.DEFINE_string("data_service", None, "ADDRESS of a tf.data service "
                      "dispatcher (e.g. grpc://host:5000): decoding and "
                      "augmentation run on its workers.")
  flags.DEFINE_string("data_dir", None,
                      "TFDS data folder (default: TFDS' own, ~/tensorflow_datasets).")
  flags.DEFINE_string("manual_dir", None,
                      "tiny_imagenet: folder holding tiny-imagenet-200.zip or "
                      "the extracted tiny-imagenet-200/ folder, used once to "
                      "prepare the data in --data_dir.")
  flags.DEFINE_integer("max_train_examples", None,
                       "Use only the first N training examples.", lower_bound=1)
  flags.DEFINE_integer("max_test_examples", None,
                       "Use only the first N test examples.", lower_bound=1)
  flags.DEFINE_bool("augment", True, "Random crop (and flip where the "
                    "dataset allows it) on the training images.")
  # Model.
  flags.DEFINE_enum("model", "small_cnn", MODEL_NAMES, "Classifier.")
  # Method and budgets.
  flags.DEFINE_enum("method", "part", METHOD_NAMES,
                    "at / trades / mart / act: the base methods (act: "
                    "Adversarial Concurrent Training, a robust and a natural "
                    "model); part / part_t / part_m / part_act: the same "
                    "with CAM budgets after burn-in.")
  flags.DEFINE_float("beta", 6.0, "Weight of the KL term of TRADES and MART.",
                     lower_bound=0.0)
  # ACT (Arani et al., BMVC 2020); defaults: the paper's CIFAR settings.
  flags.DEFINE_float("act_alpha", 0.9, "ACT: weight of the robust model's "
                     "distillation term (paper: 0.9).", lower_bound=0.0,
                     upper_bound=1.0)
  flags.DEFINE_float("act_beta", 0.9, "ACT: weight of the natural model's "
                     "distillation term (paper: 0.9).", lower_bound=0.0,
                     upper_bound=1.0)
  flags.DEFINE_float("act_temperature", 4.0, "ACT: distillation "
                     "temperature (paper: 4).")
  flags.DEFINE_enum("act_natural_model", None, MODEL_NAMES, "ACT: the "
                    "natural model's architecture (default: --model). Like "
                    "the other act_ flags, ignored by the other methods.")
  # Plug-in regularisers, added to any method; 0 is off.
  flags.DEFINE_float("consistency_weight", 0.0, "Consistency regularisation "
                     "(Tack et al., AAAI 2022): weight of the JS divergence "
                     "between the AEs of two augmentations of each example "
                     "(paper: 1.0; 0: off).", lower_bound=0.0)
  flags.DEFINE_float("consistency_temperature", 0.5, "Its sharpening "
                     "temperature (paper: 0.5).")
  flags.DEFINE_float("feature_alignment_weight", 0.0, "Feature alignment "
                     "(Liu & JaJa, IJCAI 2019): weight of the squared L2 "
                     "distance of clean and adversarial penultimate features "
                     "(0: off; the paper gives no default that we could "
                     "check).", lower_bound=0.0)
  flags.DEFINE_float("center_loss_weight", 0.0, "Center loss on adversarial "
                     "features (Agarwal et al., ICIP 2019; Wen et al.'s "
                     "default 0.003; 0: off).", lower_bound=0.0)
  flags.DEFINE_float("center_lr", 0.5, "Update rate alpha of the class "
                     "centres (Wen et al.: 0.5).")
  flags.DEFINE_string("feature_layer", None, "Layer the feature "
                      "regularisers read (default: the penultimate layer, "
                      "the input of the logits).")
  flags.DEFINE_enum("attack", "pgd", ATTACKS,
                    "How training AEs are crafted: the base method's PGD, or "
                    "mma (worst of 3 targeted margin PGD runs).")
  DEFINE_budget("epsilon", "8/255", "Full L-inf budget.")
  DEFINE_budget("epsilon_low", "7/255", "Budget of unimportant pixels (PART).")
  DEFINE_budget("step_size", "2/255", "PGD step size for training AEs.")
  flags.DEFINE_integer("num_steps", 10, "PGD steps for training AEs.",
                       lower_bound=1)
  flags.DEFINE_integer("burn_in_epochs", 20,
                       "Epochs with the uniform budget before CAM budgets.",
                       lower_bound=0)
  flags.DEFINE_enum("cam", "gradcam_plus_plus", CAM_METHODS, "CAM method.")
  flags.DEFINE_enum("mask_rule", "zscore", MASK_RULES, "CAM -> eps_map rule.")
  flags.DEFINE_string("cam_layer", "cam_features",
                      "Layer to take the CAMs at.")
  # Optimisation.
  flags.DEFINE_integer("epochs", 80, "Training epochs.", lower_bound=1)
  flags.DEFINE_integer("batch_size", 128, "Global batch size.", lower_bound=1)
  flags.DEFINE_enum("optimizer", "sgd", ("sgd", "adam"), "Optimiser.")
  flags.DEFINE_float("learning_rate", 0.01, "Initial learning rate.",
                     lower_bound=0.0)
  flags.DEFINE_float("momentum", 0.9, "SGD momentum.", lower_bound=0.0)
  flags.DEFINE_float("weight_decay", 2e-4,
                     "L2 added to gradients (PyTorch SGD semantics).",
                     lower_bound=0.0)
  flags.DEFINE_enum("lr_schedule", "piecewise", ("constant", "piecewise",
                                                 "cosine"),
                    "Learning-rate schedule over all epochs (burn-in "
                    "included, unlike the reference code).")
  flags.DEFINE_list("lr_decay_epochs", [],
                    "piecewise: epochs after which the rate is multiplied by "
                    "--lr_decay_factor, e.g. 60,70.")
  flags.DEFINE_float("lr_decay_factor", 0.1, "piecewise: decay factor.",
                     lower_bound=0.0)
  # Evaluation.
  flags.DEFINE_integer("eval_every", 0, "Measure PGD accuracy on the "
                       "validation split every N epochs and keep the most "
                       "robust epoch (0: only after the last one).",
                       lower_bound=0)
  flags.DEFINE_string(
      "validation_split", "auto", "Training images held out to choose the "
      "most robust epoch (best/, export_best/): a count like 1000, a "
      "fraction like 0.02, 0 for none, or auto: the smaller of 2% and 1,000 "
      "images when --eval_every selects among epochs, else none. The "
      "held-out block is fixed by --seed and the data; the test split is "
      "never used to choose.")
  flags.DEFINE_integer("eval_subset", None, "Evaluate at most N images of "
                       "the validation split each time (default: all); with "
                       "--validation_split=0, the first N (default 512) test "
                       "images, for curves only.", lower_bound=1)
  flags.DEFINE_integer("eval_num_steps", 20, "PGD steps of the evaluation.",
                       lower_bound=1)
  DEFINE_budget("eval_step_size", None,
                "PGD step size of the evaluation (default eval_epsilon/4).")
  DEFINE_budget("eval_epsilon", None,
                "Budget of the evaluations (default --epsilon). Train at a "
                "larger --epsilon than this for an overdesigned budget.")
  # Pictures (TensorBoard).
  flags.DEFINE_integer("image_count", 8, "Test images (chosen by --seed) "
                       "whose CAM, eps_map and adversarial example are "
                       "logged to TensorBoard; 0: none.", lower_bound=0)
  flags.DEFINE_integer("image_every", 0, "Log those pictures every N epochs "
                       "and at the end of burn-in (0: at the end of burn-in "
                       "and after every epoch after it).", lower_bound=0)
  # Run.
  flags.DEFINE_string("model_dir", None, "Run folder (created; a run that "
                      "was killed resumes from it).")
  flags.DEFINE_integer("seed", 0, "Seed of everything random.", lower_bound=0)
  flags.DEFINE_enum("jit_compile", "auto", ("auto", "true", "false"),
                    "XLA for the train step; auto = on when a GPU is present.")
  flags.DEFINE_enum("mixed_precision", "none",
                    ("none", "mixed_float16", "mixed_bfloat16"),
                    "Keras mixed-precision policy: mixed_float16 on GPUs, "
                    "mixed_bfloat16 on TPUs.")
  flags.DEFINE_enum("strategy", "auto", STRATEGIES,
                    "tf.distribute strategy. auto: multi_worker when "
                    "TF_CONFIG names several workers, tpu with --tpu, "
                    "mirrored with more than one GPU, else one_device.")
  flags.DEFINE_string("tpu", None, "TPU address or name (local: the TPU VM "
                      "this runs on); selects TPUStrategy.")
  flags.DEFINE_integer("cpu_devices", 1, "Split the CPU into N logical "
                       "devices, so that --strategy=mirrored has N replicas "
                       "without GPUs (tests; adds no speed).", lower_bound=1)
  define_cluster_timeout()
  flags.DEFINE_bool("deterministic", True, "Deterministic TF ops: the same "
                    "--seed gives the same run on the same machine.")
  flags.DEFINE_bool("export", True, "Export the SavedModel at the end.")
  flags.mark_flag_as_required("model_dir")
  FLAG_NAMES = tuple(sorted(set(flags.FLAGS) - before))
  _register_validators()


def define_cluster_timeout(flag_values=flags.FLAGS):
  """Defines --cluster_timeout (train.py and evaluate.py); its default is
  part_tf.distribution.DEFAULT_CLUSTER_TIMEOUT (tests/test_flags.py)."""
  flags.DEFINE_float(
      "cluster_timeout", 300.0, "Seconds each task of a "
      "multi-worker job (TF_CONFIG) waits for all the others to start, and "
      "a run for its --data_service dispatcher to answer, before it stops "
      "with an error naming the addresses that did not answer.",
      flag_values=flag_values)
  flags.register_validator("cluster_timeout", lambda v: v > 0,
                           message="--cluster_timeout must be > 0 seconds",
                           flag_values=flag_values)


def _register_validators():
  flags.register_validator(
      "dataset", lambda v: v in DATASET_NAMES or (
          v.startswith(TFDS_PREFIX) and len(v) > len(TFDS_PREFIX)),
      message=f"--dataset must be one of {', '.join(DATASET_NAMES)}, or "
              "tfds:NAME for a TFDS dataset")
  for name in ("mean", "std"):
    flags.register_validator(
        name, lambda v, n=name: v is None or _all_floats(
            v, positive=(n == "std")),
        message=f"--{name} must be numbers in [0, 1], one per channel, "
                "like 0.5,0.5,0.5" + (" (and > 0)" if name == "std" else ""))
  flags.register_multi_flags_validator(
      ["strategy", "tpu"],
      lambda f: f["strategy"] != "tpu" or bool(f["tpu"]),
      message="--strategy=tpu needs --tpu=ADDRESS or NAME")
  flags.register_multi_flags_validator(
      ["epsilon", "epsilon_low"],
      lambda f: f["epsilon_low"] <= f["epsilon"],
      message="--epsilon_low must not be larger than --epsilon")
  flags.register_validator("epsilon", lambda v: 0 < v < 1,
                           message="--epsilon must be > 0 and < 1 (images "
                           "are in [0, 1], so a budget of 1 or more allows "
                           "any image)")
  flags.register_validator("step_size", lambda v: v > 0,
                           message="--step_size must be > 0")
  flags.register_validator("eval_step_size", lambda v: v is None or v > 0,
                           message="--eval_step_size must be > 0")
  flags.register_validator("eval_epsilon", lambda v: v is None or 0 < v < 1,
                           message="--eval_epsilon must be > 0 and < 1")
  flags.register_validator("act_temperature", lambda v: v > 0,
                           message="--act_temperature must be > 0")
  flags.register_validator("consistency_temperature", lambda v: v > 0,
                           message="--consistency_temperature must be > 0")
  flags.register_validator("center_lr", lambda v: 0 < v <= 1,
                           message="--center_lr must be in (0, 1]")
  flags.register_multi_flags_validator(
      ["consistency_weight", "augment"],
      lambda f: not f["consistency_weight"] or f["augment"],
      message="--consistency_weight needs --augment: its two views are two "
              "augmentations of each image")
  flags.register_multi_flags_validator(
      ["burn_in_epochs", "epochs", "method"],
      lambda f: (f["method"] not in REWEIGHTED_METHODS
                 or f["burn_in_epochs"] < f["epochs"]),
      message="--burn_in_epochs must be smaller than --epochs, or the "
              "pixel-reweighted budgets are never used")
  refuse_urls("model_dir", "data_dir", "manual_dir")
  flags.register_validator(
      "validation_split", _validation_split_ok,
      message="--validation_split must be auto, a count of images like "
              "1000 (0: none), or a fraction like 0.02 (below 1)")
  flags.register_validator(
      "model_dir", lambda v: v is None or not os.path.isfile(v),
      message="--model_dir names an existing file; it must be a folder")
  for name in ("data_dir", "manual_dir"):
    flags.register_validator(
        name, lambda v, n=name: v is None or not os.path.isfile(v) or (
            n == "manual_dir" and v.endswith(".zip")),
        message=f"--{name} names an existing file; it must be a folder")
  flags.register_validator(
      "lr_decay_epochs", _all_positive_ints,
      message="--lr_decay_epochs must be positive integers like 60,70")
  flags.register_multi_flags_validator(
      ["mask_rule", "dataset"],
      lambda f: f["mask_rule"] != "official" or f["dataset"] not in (
          "mnist", "mnist_offline", "fashion_mnist"),
      message="--mask_rule=official needs RGB images (it maps CAMs through "
              "an RGB colormap); use zscore or soft for grayscale datasets")


def _validation_split_ok(value):
  try:
    parse_validation_split(value)
  except ValueError:
    return False
  return True


def parse_validation_split(value):
  """"auto", a count (int >= 0) or a fraction (float in (0, 1)) of
  `--validation_split`; ValueError for anything else."""
  text = str(value).strip().lower()
  if text == "auto":
    return "auto"
  if text.isdigit():
    return int(text)
  fraction = float(text)  # ValueError for other text
  if not 0 < fraction < 1:
    raise ValueError(f"{value!r} is not a fraction in (0, 1)")
  return fraction


def canonical_validation_split(value) -> str:
  """`--validation_split` as config.json records it: 1000 (from Python),
  "1000" and " 1000 " (from the flag) are the same setting."""
  return str(parse_validation_split(value))


def _all_positive_ints(values):
  try:
    return all(int(v) > 0 for v in values)
  except ValueError:
    return False


def _all_floats(values, positive=False):
  try:
    numbers = [float(v) for v in values]
  except ValueError:
    return False
  return bool(numbers) and all(
      0 <= v <= 1 and (v > 0 or not positive) for v in numbers)
