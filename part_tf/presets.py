"""Per-dataset presets: the settings `--dataset=X` alone brings.

`python scripts/train.py --dataset=cifar10 --model_dir=...` alone trains the
PART reference code's setup for CIFAR-10 (its ResNet-18 on raw pixels, its
budgets, optimiser and per-epoch schedule; docs/method.md's parity table
lists every setting); the same holds for cifar100, svhn_cropped and
tiny_imagenet. The digit datasets (mnist_offline, the quick start's, mnist
and fashion_mnist) get the quick setup of configs/mnist_offline.cfg. A
setting given on the command line or in a flagfile always wins; these only
replace the configs' defaults (`part_tf.config`), which `tfds:NAME` datasets
keep. Every key is a setting of `part_tf.config` (a test checks it), and
`configs/*.cfg` write these out (a test checks they agree).

Importing this module imports neither TensorFlow nor Keras.
"""

# The PART reference code's CIFAR-10 setup. Its schedule counts the decay
# epochs 60 and 90 after the 20 burn-in epochs: the rate is 0.01 in epochs
# 1-79 and 0.001 in the 80th. No normalisation: mean/std stay unset.
_PAPER = {
    "model": "resnet18", "epsilon": 8 / 255, "epsilon_low": 7 / 255,
    "step_size": 2 / 255, "num_steps": 10, "epochs": 80,
    "burn_in_epochs": 20, "batch_size": 128, "optimizer": "sgd",
    "learning_rate": 0.01, "momentum": 0.9, "weight_decay": 2e-4,
    "lr_schedule": "reference", "lr_decay_epochs": (60, 90),
    "eval_every": 5, "eval_num_steps": 20,
    # TRADES' KL target is a second clean pass in the reference code.
    "trades_clean_passes": 2,
}

# 8/255 is meaningless on digits and 0.3 does not train from scratch in a few
# epochs; 0.1 does (docs/method.md, "Small offline runs"). A small CNN, Adam
# and 8 epochs: about 10-15 s per epoch on a 2-core CPU.
_QUICK = {
    "model": "small_cnn", "epsilon": 0.1, "epsilon_low": 0.07,
    "step_size": 0.025, "num_steps": 10, "epochs": 8, "burn_in_epochs": 3,
    "batch_size": 128, "optimizer": "adam", "learning_rate": 0.001,
    "weight_decay": 0.0, "lr_schedule": "constant", "eval_num_steps": 20,
}

PRESETS = {
    "cifar10": _PAPER,
    "cifar100": _PAPER,
    # Reference code: SVHN trains with step 1/255 and weight decay 3.5e-3
    # (and without augmentation, which the dataset spec itself says), and
    # its PGD-20 evaluation steps by that 1/255 too.
    "svhn_cropped": {**_PAPER, "step_size": 1 / 255, "weight_decay": 3.5e-3,
                     "eval_step_size": 1 / 255},
    # Same schedule and budgets as CIFAR-10, on 64x64 images.
    "tiny_imagenet": _PAPER,
    "mnist": _QUICK,
    "fashion_mnist": _QUICK,
    "mnist_offline": _QUICK,
}


def preset(dataset: str) -> dict:
  """{setting: value} that `dataset` brings ({} for tfds:NAME)."""
  return dict(PRESETS.get(dataset, {}))
