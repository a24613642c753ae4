"""Flags of the seconds-long training runs that the script tests start."""

# 2 steps per epoch on 256 offline MNIST images, 1-step PGD, a tiny
# evaluation. Tests add epochs, burn-in and what they check.
TINY_TRAIN = ["--max_train_examples=256", "--max_test_examples=64",
              "--batch_size=128", "--epsilon=0.1", "--epsilon_low=0.07",
              "--step_size=0.025", "--num_steps=1", "--eval_num_steps=1",
              "--eval_subset=32", "--optimizer=adam", "--learning_rate=1e-3"]
