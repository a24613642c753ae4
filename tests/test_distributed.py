"""Training beyond one device: a real two-worker job over 127.0.0.1 against
MirroredStrategy on two logical CPUs, a worker killed mid-run, distributed
PGD evaluation, and the strategy choice from TF_CONFIG."""

import contextlib
import dataclasses
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from unittest import mock

import h5py
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from part_tf import distribution
from part_tf import multi_worker
from tests import commands
from tests.tiny_runs import TINY_TRAIN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "scripts", "train.py")
# 3 epochs of 4 steps (global batch 64 = 32 per replica); the test split's
# last batch (70 = 64 + 6) leaves the second replica 0 of its 6 examples.
RUN = [*TINY_TRAIN, "--batch_size=64", "--max_test_examples=70",
       "--eval_num_steps=2", "--epochs=3", "--burn_in_epochs=1",
       "--eval_every=1", "--validation_split=32", "--allow_small_validation",
       "--image_count=2", "--image_every=2"]
TIMEOUT = 240  # seconds any one training process may take


def _free_ports(count):
  """Ports free on 127.0.0.1 right now (bound, read, released)."""
  with contextlib.ExitStack() as stack:
    sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
    for s in sockets:
      s.bind(("127.0.0.1", 0))
    return [s.getsockname()[1] for s in sockets]


def _worker_folders(tmp):
  """What part_tf's workers left in their temporary folder (TF's autograph
  leaves files of its own there)."""
  return [n for n in os.listdir(tmp) if n.startswith("part_tf")]


def _event_files(model_dir):
  """The TensorBoard event files of a run, by folder."""
  found = {}
  for folder, _, names in os.walk(os.path.join(model_dir, "tensorboard")):
    count = sum(n.startswith("events.out.tfevents") for n in names)
    if count:
      found[os.path.relpath(folder, model_dir)] = count
  return found


def _weights(path):
  values = {}
  with h5py.File(path, "r") as f:
    f.visititems(lambda name, obj: values.__setitem__(name, obj[()])
                 if isinstance(obj, h5py.Dataset) else None)
  return values


def _backup_weights(model_dir):
  with open(os.path.join(model_dir, "backup", "state.json")) as f:
    name = json.load(f)["weights"]
  return _weights(os.path.join(model_dir, "backup", name))


def _log_rows(model_dir):
  with open(os.path.join(model_dir, "log.csv")) as f:
    lines = f.read().splitlines()
  return [dict(zip(lines[0].split(","), map(float, row.split(","))))
          for row in lines[1:]]


@pytest.mark.slow
class TwoWorkerTest(tf.test.TestCase):
  """Two `scripts/train.py` processes with a TF_CONFIG on 127.0.0.1."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.root = tempfile.mkdtemp(prefix="part_tf_distributed_")
    cls.reference = os.path.join(cls.root, "mirrored")
    result = commands.run(
        [sys.executable, TRAIN, *RUN, "--strategy=mirrored",
         "--cpu_devices=2", f"--model_dir={cls.reference}"],
        capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "mirrored over 2 replicas" in result.stdout, result.stdout

  @classmethod
  def tearDownClass(cls):
    commands.run(["rm", "-rf", cls.root], check=False)
    super().tearDownClass()

  def setUp(self):
    super().setUp()
    self.processes = []

  def tearDown(self):
    for p in self.processes:
      if p.poll() is None:
        p.kill()
      p.wait(timeout=30)
    super().tearDown()

  def _start_job(self, model_dir, ports, tmp, extra=()):
    """Starts the chief (worker 0) and worker 1; their TMPDIR is `tmp`."""
    workers = [f"127.0.0.1:{p}" for p in ports]
    started = []
    for index in (1, 0):
      env = dict(os.environ, TMPDIR=tmp, TF_CONFIG=json.dumps(
          {"cluster": {"worker": workers},
           "task": {"type": "worker", "index": index}}))
      log = open(os.path.join(self.root, f"{os.path.basename(model_dir)}-"
                              f"{index}-{len(self.processes)}.log"), "w")
      self.addCleanup(log.close)
      p = commands.Popen([sys.executable, TRAIN, *RUN, *extra,
                          f"--model_dir={model_dir}"],
                         stdout=log, stderr=subprocess.STDOUT, env=env)
      self.processes.append(p)
      started.append(p)
    return started[1], started[0]  # chief, worker

  def _finish(self, *processes):
    deadline = time.time() + TIMEOUT
    for p in processes:
      code = p.wait(timeout=max(1, deadline - time.time()))
      self.assertEqual(code, 0, self._logs())

  def _logs(self):
    text = ""
    for path in sorted(glob.glob(os.path.join(self.root, "*.log"))):
      with open(path) as f:
        text += f"--- {path}\n" + f.read()[-2000:]
    return text

  def _assert_equals_reference(self, model_dir):
    for got, want in zip(_log_rows(model_dir), _log_rows(self.reference),
                         strict=True):
      self.assertAllClose(got, want, atol=1e-5, msg="log.csv rows")
    got, want = _backup_weights(model_dir), _backup_weights(self.reference)
    self.assertEqual(sorted(got), sorted(want))
    for name in want:
      self.assertAllClose(got[name], want[name], atol=1e-5, msg=name)
    with open(os.path.join(model_dir, "metrics.json")) as f:
      metrics = json.load(f)
    with open(os.path.join(self.reference, "metrics.json")) as f:
      reference = json.load(f)
    for key in ("natural_accuracy", "pgd2_accuracy", "num_test_examples"):
      self.assertAllClose(metrics[key], reference[key], msg=key)
    self.assertAllClose(metrics["best"]["pgd2_accuracy"],
                        reference["best"]["pgd2_accuracy"])
    self.assertEqual((metrics["strategy"], metrics["num_replicas"]),
                     ("multi_worker", 2))
    self.assertEqual(reference["strategy"], "mirrored")
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["strategy_used"], config["num_replicas"]),
                     ("multi_worker", 2))

  def test_two_workers_equal_mirrored_and_only_the_chief_writes(self):
    model_dir = os.path.join(self.root, "two_workers")
    tmp = tempfile.mkdtemp(dir=self.root, prefix="tmp_")
    self._finish(*self._start_job(model_dir, _free_ports(2), tmp))
    self._assert_equals_reference(model_dir)
    # The chief's files only: the same as the one-process run's, and one
    # TensorBoard event stream per folder (each writer adds its own file).
    self.assertEqual(sorted(os.listdir(model_dir)),
                     sorted(os.listdir(self.reference)))
    self.assertEqual(_event_files(model_dir), _event_files(self.reference))
    self.assertLen(os.listdir(os.path.join(model_dir, "export")), 1)
    self.assertEqual(_worker_folders(tmp), [], "worker 1 left its folder")

  def test_killed_worker_job_restarts_and_equals_an_uninterrupted_run(self):
    model_dir = os.path.join(self.root, "killed")
    tmp = tempfile.mkdtemp(dir=self.root, prefix="tmp_")
    chief, worker = self._start_job(model_dir, _free_ports(2), tmp)
    state = os.path.join(model_dir, "backup", "state.json")
    deadline = time.time() + TIMEOUT
    epoch = 0
    while epoch < 1 and time.time() < deadline and chief.poll() is None:
      time.sleep(0.05)
      with contextlib.suppress(OSError, ValueError):
        with open(state) as f:
          epoch = json.load(f)["epoch"]
    self.assertEqual(chief.poll(), None, "the run ended before the kill")
    worker.send_signal(signal.SIGKILL)
    # The job is restarted as a whole, as a cluster manager does; the chief
    # may hang in a collective waiting for its dead peer.
    with contextlib.suppress(subprocess.TimeoutExpired):
      chief.wait(timeout=5)
    chief.kill()
    chief.wait(timeout=30)
    with open(state) as f:
      self.assertLess(json.load(f)["epoch"], 3, "killed too late")
    self._finish(*self._start_job(model_dir, _free_ports(2), tmp))
    self._assert_equals_reference(model_dir)
    with open(os.path.join(model_dir, "metrics.json")) as f:
      self.assertGreaterEqual(json.load(f)["resumed_at_epoch"], 1)
    self.assertEqual(_worker_folders(tmp), [])


  def test_two_workers_stream_their_own_shares_of_a_tfds_dataset(self):
    data_dir = os.path.join(self.root, "tfds")
    rng = np.random.default_rng(0)
    arrays = {"image": rng.integers(0, 256, (256, 28, 28, 1), np.uint8),
              "label": rng.integers(0, 10, 256)}
    features = tfds.features.FeaturesDict({
        "image": tfds.features.Image(shape=(28, 28, 1)),
        "label": tfds.features.ClassLabel(num_classes=10)})
    tfds.dataset_builders.store_as_tfds_dataset(
        name="two_worker_images", version="1.0.0", features=features,
        config=None, data_dir=data_dir, split_datasets={
            "train": tf.data.Dataset.from_tensor_slices(arrays),
            "test": tf.data.Dataset.from_tensor_slices(
                {k: v[:40] for k, v in arrays.items()})})
    model_dir = os.path.join(self.root, "streamed")
    tmp = tempfile.mkdtemp(dir=self.root, prefix="tmp_")
    # Two epochs, no pictures or export: this run's point is the input.
    extra = ["--dataset=tfds:two_worker_images", f"--data_dir={data_dir}",
             "--input=stream", "--mean=0.5", "--std=0.25",
             "--max_test_examples=40", "--epochs=2", "--image_count=0",
             "--noexport"]
    self._finish(*self._start_job(model_dir, _free_ports(2), tmp, extra))
    with open(os.path.join(model_dir, "config.json")) as f:
      config = json.load(f)
    self.assertEqual((config["input_used"], config["strategy_used"]),
                     ("stream", "multi_worker"))
    self.assertLen(_log_rows(model_dir), 2)
    with open(os.path.join(model_dir, "metrics.json")) as f:
      self.assertEqual(json.load(f)["num_test_examples"], 40)
    self.assertEqual(_worker_folders(tmp), [])

  def test_evaluate_py_on_two_replicas_equals_one_device(self):
    reports = {}
    for name, extra in (("one", []), ("two", ["--strategy=mirrored",
                                               "--cpu_devices=2"])):
      out = os.path.join(self.root, f"eval_{name}")
      result = commands.run(
          [sys.executable, os.path.join(ROOT, "scripts", "evaluate.py"),
           f"--model_path={self.reference}", f"--output_dir={out}",
           "--attacks=fgsm,pgd,square", "--num_steps=5",
           "--apgd_steps=5", "--square_queries=30", "--batch_size=32",
           "--epsilon=0.2", "--num_examples=70", "--nosanity_checks",
           *extra],
          capture_output=True, text=True, timeout=TIMEOUT, check=False)
      self.assertEqual(result.returncode, 0, result.stderr[-3000:])
      with open(os.path.join(out, "eval.json")) as f:
        reports[name] = json.load(f)
    self.assertEqual(reports["two"]["num_replicas"], 2)
    one, two = reports["one"]["reports"][0], reports["two"]["reports"][0]
    for report in (one, two):
      self.assertGreater(report.pop("total_seconds"), 0)  # not a result
    self.assertEqual(two, one)
    self.assertEqual(one["num_examples"], 70)  # 32 + 32 + 6
    self.assertLess(min(one["robust_accuracy"].values()),
                    one["natural_accuracy"])


@pytest.mark.slow
class JobThatCannotStartTest(tf.test.TestCase):
  """Multi-worker jobs that can never start: every task ends within
  --cluster_timeout in one line on stderr naming what is wrong, and
  --model_dir is left as it was (here: never made)."""

  # Seconds any one process may take: start-up (TensorFlow loads in 5-30 s
  # on this shared machine) plus --cluster_timeout. A task that hangs is
  # killed then, which fails the test.
  DEADLINE = 150

  def setUp(self):
    super().setUp()
    self.root = tempfile.mkdtemp(prefix="part_tf_start_")
    self.addCleanup(subprocess.run, ["rm", "-rf", self.root], check=False)
    self.processes = []

  def tearDown(self):
    for p in self.processes:
      if p.poll() is None:
        p.kill()
      p.wait(timeout=30)
    super().tearDown()

  def _start(self, ports, index, *flags):
    """train.py as task `index` of a cluster of workers on `ports`."""
    name = f"{index}-{len(self.processes)}"
    out = open(os.path.join(self.root, f"{name}.out"), "w+")
    err = open(os.path.join(self.root, f"{name}.err"), "w+")
    self.addCleanup(out.close)
    self.addCleanup(err.close)
    env = dict(os.environ, TMPDIR=self.root, TF_CONFIG=json.dumps(
        {"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
         "task": {"type": "worker", "index": index}}))
    p = commands.Popen([sys.executable, TRAIN, *RUN, *flags],
                       stdout=out, stderr=err, env=env)
    p.err = err
    self.processes.append(p)
    return p

  def _stderr_lines(self, process):
    """The exit code and stderr lines of `process` (killed at DEADLINE)."""
    try:
      code = process.wait(timeout=self.DEADLINE)
    except subprocess.TimeoutExpired:
      process.kill()
      code = "killed: still running after %d s" % self.DEADLINE
    process.err.seek(0)
    return code, process.err.read().strip().splitlines()

  def _assert_one_line(self, process, line):
    code, lines = self._stderr_lines(process)
    self.assertEqual((code, lines), (1, [line]))

  def test_a_missing_worker_is_named_by_the_others(self):
    model_dir = os.path.join(self.root, "run")
    ports = _free_ports(4)
    # Worker 0 (the coordination leader) without worker 1, and worker 1
    # of another job without its worker 0: both give up after 5 s.
    started = time.monotonic()
    leader = self._start(ports[:2], 0, "--cluster_timeout=5",
                         f"--model_dir={model_dir}")
    follower = self._start(ports[2:], 1, "--cluster_timeout=5",
                           f"--model_dir={model_dir}")
    hint = ("start every task that TF_CONFIG names, or give the slow ones a "
            "longer --cluster_timeout")
    self._assert_one_line(leader, (
        f"error: worker 0 could not reach worker 1 at 127.0.0.1:{ports[1]} "
        f"within 5 s (--cluster_timeout): {hint}"))
    self._assert_one_line(follower, (
        f"error: worker 1 could not reach worker 0 at 127.0.0.1:{ports[2]} "
        f"within 5 s (--cluster_timeout): {hint}"))
    self.assertLess(time.monotonic() - started, self.DEADLINE)
    self.assertFalse(os.path.exists(model_dir))
    self.assertEqual(_worker_folders(self.root), [])

  def test_a_taken_port_is_named_and_its_peer_stops_too(self):
    model_dir = os.path.join(self.root, "run")
    ports = _free_ports(2)
    with socket.socket() as squatter:  # another program on worker 0's port
      squatter.bind(("127.0.0.1", ports[0]))
      squatter.listen()
      chief = self._start(ports, 0, "--cluster_timeout=5",
                          f"--model_dir={model_dir}")
      worker = self._start(ports, 1, "--cluster_timeout=5",
                           f"--model_dir={model_dir}")
      self._assert_one_line(chief, (
          f"error: cannot start worker 0: port {ports[0]} of its TF_CONFIG "
          f"address 127.0.0.1:{ports[0]} is in use by another program"))
      self._assert_one_line(worker, (
          f"error: worker 1: worker 0 at 127.0.0.1:{ports[0]} answers but "
          "did not join the job within 5 s (--cluster_timeout): is another "
          "program using its port, or a task started with another "
          "TF_CONFIG?"))
    self.assertFalse(os.path.exists(model_dir))

  def test_differing_settings_stop_every_worker_before_the_first_step(self):
    model_dir = os.path.join(self.root, "run")
    ports = _free_ports(2)
    # --cluster_timeout is a setting of each machine: it may differ.
    first = self._start(ports, 0, "--learning_rate=0.001", "--epochs=4",
                        "--cluster_timeout=60", f"--model_dir={model_dir}")
    second = self._start(ports, 1, "--learning_rate=0.01", "--epochs=5",
                         "--cluster_timeout=90", f"--model_dir={model_dir}")
    line = ("error: the workers' settings differ: --epochs (worker 0: 4, "
            "worker 1: 5); --learning_rate (worker 0: 0.001, worker 1: 0.01)")
    self._assert_one_line(first, line)
    self._assert_one_line(second, line)
    self.assertFalse(os.path.exists(model_dir))
    self.assertEqual(_worker_folders(self.root), [])


@pytest.mark.slow
class DistributedEvaluationTest(tf.test.TestCase):

  def test_every_attack_and_sequence_on_two_replicas_equal_one_device(self):
    code = textwrap.dedent("""
        import json, numpy as np, tensorflow as tf
        from part_tf import distribution
        distribution.split_cpu(2)
        import keras
        from part_tf import attack_suite

        def classifier():
          inputs = keras.Input((8, 8, 3))
          h = keras.layers.Conv2D(4, 3, padding="same",
                                  activation="relu")(inputs)
          return keras.Model(
              inputs, keras.layers.Dense(5)(keras.layers.Flatten()(h)))

        rng = np.random.default_rng(0)
        x = rng.uniform(size=(21, 8, 8, 3)).astype(np.float32)
        y = rng.integers(0, 5, 21).astype(np.int32)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)  # 10,10,1
        keras.utils.set_random_seed(0)
        one = classifier()
        config = attack_suite.SuiteConfig(num_steps=3, apgd_steps=3,
                                          square_queries=20, fab_steps=3,
                                          fab_restarts=2, num_targets=2)
        names = list(attack_suite.available_attacks())
        single = attack_suite.evaluate(lambda z: one(z, training=False), ds,
                                       0.05, names, config, 1,
                                       per_example=True)
        two = distribution.create("mirrored")
        with two.scope():
          model = classifier()
        model.set_weights(one.get_weights())
        split = attack_suite.evaluate(lambda z: model(z, training=False), ds,
                                      0.05, names, config, 1,
                                      per_example=True, strategy=two)
        # AutoAttack's sequence: each replica attacks its share of the
        # still-robust examples of a batch. "coin" fools an example or not
        # by its random draw: equal only if every example draws the same.
        from part_tf.attacks import noise

        def coin(config, model_fn, x, y, eps, seed):
          del config, eps
          u = noise.uniform(tf.shape(y), seed, 0.0, 1.0, tf.float32)
          return tf.where(u[:, None, None, None] < 0.5, 1.0 - x, x)
        from part_tf import attack_catalogue
        attack_catalogue.register("coin", evaluate=coin)
        # (Every attack alone is checked above; the sequence needs a
        # gradient attack, a targeted one, a black box and the coin.)
        plus = ("fgsm", "coin", "apgd_t", "square")
        # Labels the model gets right, so that every example is attacked.
        x2 = rng.uniform(size=(60, 8, 8, 3)).astype(np.float32)
        y2 = np.argmax(one(x2), 1).astype(np.int32)
        ds2 = tf.data.Dataset.from_tensor_slices((x2, y2)).batch(20)
        seq = [attack_suite.evaluate_sequence(
            lambda z, m=m: m(z, training=False), ds2, 0.05, plus, config, 1,
            per_example=True, strategy=s)
               for m, s in ((one, None), (model, two))]
        print(json.dumps({
            "names": names,
            "sequence": [[r["robust"][n].tolist() for n in plus]
                         + [r["examples_attacked"]] for r in seq],
            "natural": [single["natural"].tolist(), split["natural"].tolist()],
            "robust": {n: [single["robust"][n].tolist(),
                           split["robust"][n].tolist()] for n in names}}))
        """)
    result = commands.run([sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual(set(out["names"]), {"fgsm", "pgd", "cw", "mma",
                                         "apgd_ce", "apgd_t", "square",
                                         "apgd_dlr", "fab_t", "fab"})
    single_seq, split_seq = out["sequence"]
    self.assertEqual(split_seq, single_seq)
    attacked = single_seq[-1]
    self.assertLess(attacked["coin"], attacked["fgsm"])  # fgsm fooled some
    self.assertGreater(attacked["coin"], 10)
    single, split = out["natural"]
    self.assertEqual(split, single)
    fooled = 0
    for name, (single, split) in out["robust"].items():
      self.assertEqual(split, single, name)
      fooled += sum(a and not b for a, b in zip(out["natural"][0], single))
    self.assertGreater(fooled, 0, "no attack changed a prediction")

  def test_pgd_evaluation_on_two_replicas_equals_one_device(self):
    # Two logical CPUs must be configured before TensorFlow starts.
    code = textwrap.dedent("""
        import json, numpy as np, tensorflow as tf
        from part_tf import distribution
        distribution.split_cpu(2)
        import keras
        from part_tf import evaluation

        def classifier():
          inputs = keras.Input((8, 8, 3))
          h = keras.layers.Conv2D(6, 3, padding="same")(inputs)
          h = keras.layers.BatchNormalization()(h)
          h = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(h))
          return keras.Model(inputs, keras.layers.Dense(3)(h))

        rng = np.random.default_rng(0)
        x = rng.uniform(size=(21, 8, 8, 3)).astype(np.float32)
        y = rng.integers(0, 3, 21).astype(np.int32)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)  # 10,10,1
        keras.utils.set_random_seed(0)
        one = classifier()
        one.layers[2].moving_mean.assign(rng.uniform(size=6))
        attack = dict(epsilon=0.3, step_size=0.1, num_steps=3, seed=4)
        single = evaluation.robust_accuracy(one, ds, **attack)
        two = distribution.create("mirrored")
        with two.scope():
          model = classifier()
        model.set_weights(one.get_weights())
        # Replica copies of the batch-norm statistics that drifted apart:
        # the evaluation must use the first replica's on both.
        moving = model.layers[2].moving_mean
        moving.value.values[1].assign(np.zeros(6, np.float32))
        distributed = evaluation.robust_accuracy(model, ds, strategy=two,
                                                 **attack)
        copies = [v.numpy().tolist() for v in moving.value.values]
        print(json.dumps({"single": single, "distributed": distributed,
                          "replicas": two.num_replicas_in_sync,
                          "copies_equal": copies[0] == copies[1]}))
        """)
    result = commands.run([sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=TIMEOUT,
                          check=False)
    self.assertEqual(result.returncode, 0, result.stderr[-3000:])
    out = json.loads(result.stdout.strip().splitlines()[-1])
    self.assertEqual(out["replicas"], 2)
    self.assertTrue(out["copies_equal"])
    self.assertEqual(out["single"]["num_examples"], 21)
    self.assertEqual(out["distributed"], out["single"])
    # The attack did something, so equality is not trivial.
    self.assertLess(out["single"]["pgd_accuracy"],
                    out["single"]["natural_accuracy"] + 1e-9)


class StrategyChoiceTest(tf.test.TestCase):

  def _cluster(self, tf_config):
    with mock.patch.dict(os.environ, {"TF_CONFIG": json.dumps(tf_config)}):
      return distribution.cluster()

  def test_tf_config_roles(self):
    workers = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
    first = self._cluster({"cluster": workers,
                           "task": {"type": "worker", "index": 0}})
    self.assertEqual((first.num_workers, first.is_chief), (2, True))
    second = self._cluster({"cluster": workers,
                            "task": {"type": "worker", "index": 1}})
    self.assertFalse(second.is_chief)
    with_chief = {"chief": ["127.0.0.1:3"], **workers}
    self.assertTrue(self._cluster({"cluster": with_chief,
                                   "task": {"type": "chief"}}).is_chief)
    worker0 = self._cluster({"cluster": with_chief,
                             "task": {"type": "worker", "index": 0}})
    self.assertEqual((worker0.num_workers, worker0.is_chief), (3, False))
    with mock.patch.dict(os.environ, {"TF_CONFIG": ""}):
      self.assertEqual(distribution.cluster(), distribution.Cluster())

  def test_auto(self):
    workers = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
               "task": {"type": "worker", "index": 1}}
    with mock.patch.dict(os.environ, {"TF_CONFIG": json.dumps(workers)}):
      self.assertEqual(distribution.resolve("auto"), "multi_worker")
      self.assertEqual(distribution.resolve("auto", tpu="local"), "tpu")
      self.assertEqual(distribution.resolve("mirrored"), "mirrored")
    with mock.patch.dict(os.environ, {"TF_CONFIG": ""}):
      self.assertEqual(distribution.resolve("auto"), "one_device")  # no GPU

  def test_bad_settings_are_one_line_errors(self):
    with mock.patch.dict(os.environ, {"TF_CONFIG": "{not json"}):
      with self.assertRaisesRegex(ValueError, "TF_CONFIG is not a valid"):
        distribution.cluster()
    with mock.patch.dict(os.environ, {"TF_CONFIG": json.dumps(
        {"cluster": {"worker": ["127.0.0.1:1"]}})}):
      with self.assertRaisesRegex(ValueError, "no task"):
        distribution.cluster()
    with mock.patch.dict(os.environ, {"TF_CONFIG": ""}):
      with self.assertRaisesRegex(ValueError, "needs a TF_CONFIG"):
        distribution.create("multi_worker")
      with self.assertRaisesRegex(ValueError, "needs --tpu"):
        distribution.create("tpu")
    with self.assertRaisesRegex(ValueError, "unknown strategy"):
      distribution.resolve("gpus")

  def test_task_types_part_tf_does_not_run_are_refused_by_name(self):
    workers = ["127.0.0.1:1", "127.0.0.1:2"]
    refused = ("tasks, which part_tf does not run: it trains with "
               "MultiWorkerMirroredStrategy, whose tasks are \"chief\" and "
               "\"worker\" only")
    for tf_config, named in (
        ({"cluster": {"worker": workers, "ps": ["127.0.0.1:3"]},
          "task": {"type": "ps", "index": 0}}, "ps"),
        ({"cluster": {"chief": ["127.0.0.1:4"], "worker": workers,
                      "evaluator": ["127.0.0.1:5"], "ps": ["127.0.0.1:3"]},
          "task": {"type": "worker", "index": 1}}, "evaluator and ps"),
        ({"cluster": {"worker": workers},
          "task": {"type": "evaluator", "index": 0}}, "evaluator")):
      with self.subTest(named=named, task=tf_config["task"]["type"]):
        with mock.patch.dict(os.environ,
                             {"TF_CONFIG": json.dumps(tf_config)}):
          with self.assertRaisesRegex(
              ValueError, f"^TF_CONFIG names {named} {refused}$"):
            distribution.cluster()
          with self.assertRaisesRegex(ValueError, refused):
            distribution.create("one_device")
    # One worker and a parameter server: on main, a one-device run.
    with mock.patch.dict(os.environ, {"TF_CONFIG": json.dumps(
        {"cluster": {"worker": workers[:1], "ps": ["127.0.0.1:3"]},
         "task": {"type": "worker", "index": 0}})}):
      with self.assertRaisesRegex(ValueError, f"^TF_CONFIG names ps "
                                  f"{refused}$"):
        distribution.create("auto")

  def test_tasks_the_cluster_lacks_are_refused(self):
    for tf_config, message in (
        ({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
          "task": {"type": "worker", "index": 2}},
         "TF_CONFIG's task is worker 2, but its cluster names 2 worker "
         "tasks"),
        ({"cluster": {"worker": ["127.0.0.1:1"]},
          "task": {"type": "chief", "index": 0}},
         "TF_CONFIG's task is chief, but its cluster names 0 chief tasks"),
        ({"cluster": {"chief": ["127.0.0.1:1", "127.0.0.1:2"]},
          "task": {"type": "chief", "index": 0}},
         "TF_CONFIG names 2 chief tasks; a cluster has at most one")):
      with self.subTest(message=message):
        with mock.patch.dict(os.environ,
                             {"TF_CONFIG": json.dumps(tf_config)}):
          with self.assertRaisesRegex(ValueError, f"^{message}$"):
            distribution.cluster()

  def test_tasks_are_named_with_their_addresses(self):
    tf_config = {"cluster": {"chief": ["h:1"], "worker": ["h:2", "h:3"]},
                 "task": {"type": "worker", "index": 1}}
    with mock.patch.dict(os.environ, {"TF_CONFIG": json.dumps(tf_config)}):
      task = distribution.cluster()
    self.assertEqual(task.tasks, (("chief", "h:1"), ("worker 0", "h:2"),
                                  ("worker 1", "h:3")))
    self.assertEqual((task.name, task.address), ("worker 1", "h:3"))

  def test_differing_settings_are_named_with_every_value(self):
    self.assertEqual(multi_worker.differing_settings(
        {"chief": {"a": 1, "b": 0.001, "c": "x", "d": [1]},
         "worker 0": {"a": 1, "b": 0.01, "d": [1]},
         "worker 1": {"a": 1, "b": 0.001, "c": "x", "d": [2]}}),
        '--b (chief: 0.001, worker 0: 0.01, worker 1: 0.001); '
        '--c (chief: "x", worker 0: unset, worker 1: "x"); '
        '--d (chief: [1], worker 0: [1], worker 1: [2])')
    self.assertEqual(multi_worker.differing_settings(
        {"worker 0": {"a": 1.0}, "worker 1": {"a": 1}}), "")

  def test_a_failed_barrier_after_every_value_still_names_the_difference(
      self):
    # The leader passes the barrier, raises on the difference and exits
    # before its coordination service answers worker 1's wait.
    values = {"worker 0": {"epochs": 4}, "worker 1": {"epochs": 5}}

    class Context:
      def set_config_key_value(self, key, value):
        del key, value

      def get_config_key_value(self, key, milliseconds):
        del milliseconds
        return json.dumps(values[key.rsplit("/", 1)[1]])

      def wait_at_barrier(self, name, milliseconds):
        raise tf.errors.UnavailableError(None, None, f"{name} {milliseconds}")

    tf_config = {"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                 "task": {"type": "worker", "index": 1}}
    with mock.patch.dict(os.environ, {"TF_CONFIG": json.dumps(tf_config)}):
      worker = distribution.cluster()
    with mock.patch("tensorflow.python.eager.context.context", Context):
      with self.assertRaisesRegex(ValueError, r"^the workers' settings "
                                  r"differ: --epochs \(worker 0: 4, worker "
                                  r"1: 5\)$"):
        multi_worker.check_same_everywhere(worker, values["worker 1"], 5)
      values["worker 1"] = values["worker 0"]  # equal: the barrier's error
      with self.assertRaisesRegex(ValueError, "^worker 1: a task did not "
                                  "send its settings within 5 s"):
        multi_worker.check_same_everywhere(worker, values["worker 1"], 5)

  def test_per_worker_settings_are_settings(self):
    from part_tf import config as config_lib  # pylint: disable=g-import-not-at-top
    per_worker = config_lib.TrainConfig().per_worker_settings()
    self.assertLessEqual(set(per_worker), set(config_lib.all_settings()))
    # What makes workers train differently must be compared.
    for name in ("epochs", "learning_rate", "batch_size", "model", "method",
                 "seed", "image_every", "eval_every", "jit_compile"):
      self.assertNotIn(name, per_worker)


if __name__ == "__main__":
  tf.test.main()
