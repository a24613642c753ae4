"""Which `tf.distribute` strategy a run uses, and who in a job writes.

`create("auto")` reads the machine and `TF_CONFIG`, as Keras users expect:

  TF_CONFIG naming several workers  -> MultiWorkerMirroredStrategy
  --tpu=ADDRESS or NAME             -> TPUStrategy
  more than one GPU                 -> MirroredStrategy over the GPUs
  otherwise                         -> the default one-device strategy

Only the chief writes the run folder (Keras' convention): the worker with
`task.type == "chief"`, or worker 0 of a cluster without one. Other workers
write to temporary folders that they remove (see `part_tf.experiment`).
part_tf runs "chief" and "worker" tasks only: a TF_CONFIG naming others
("ps", "evaluator") is refused.

A job that cannot assemble ends in one line on every task instead of
waiting for ever (`part_tf.multi_worker`).

Keras 3 (3.15) does not train under `MultiWorkerMirroredStrategy` as it is:
its `fit` reduces a first batch to build the model (a cross-worker reduce of
a `PerReplica` that TF rejects) and it reduces scalar logs along axis 0.
`PARTModel` works around both (see `multi_worker_logs` and
`PARTModel._maybe_symbolic_build`), and `tests/test_distributed.py` runs a real
two-process job over 127.0.0.1.
"""

import dataclasses
import json
import os

import tensorflow as tf

from part_tf import config as config_lib

from part_tf import multi_worker

STRATEGIES = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
# The TF_CONFIG task types part_tf runs (MultiWorkerMirroredStrategy's).
TASK_TYPES = ("chief", "worker")
# Seconds a multi-worker task waits for the others to start (and a run for
# its tf.data service dispatcher to answer) before it gives up.
DEFAULT_CLUSTER_TIMEOUT = config_lib.RunConfig.cluster_timeout  # its one default


@dataclasses.dataclass(frozen=True)
class Cluster:
  """This process' place in a `TF_CONFIG` cluster.

  Attributes:
    num_workers: tasks that train (chief included); 1 without TF_CONFIG.
    task_type: "chief" or "worker", or None without TF_CONFIG.
    task_index: index within `task_type`.
    has_chief: whether the cluster names a "chief" task.
    tasks: ((name, address), ...) of every task, the chief first, then the
      workers in order; names as `name` gives them ("chief", "worker 1").
  """
  num_workers: int = 1
  task_type: str | None = None
  task_index: int = 0
  has_chief: bool = False
  tasks: tuple = ()

  @property
  def name(self) -> str:
    """This task as messages name it: "chief" or "worker N"."""
    return _task_name(self.task_type, self.task_index)

  @property
  def address(self) -> str | None:
    """This task's host:port in TF_CONFIG (None without TF_CONFIG)."""
    return dict(self.tasks).get(self.name)

  @property
  def is_chief(self) -> bool:
    """Whether this process writes the run folder."""
    if self.task_type in (None, "chief"):
      return True
    return (self.task_type == "worker" and self.task_index == 0
            and not self.has_chief)


def _task_name(task_type, index) -> str:
  return "chief" if task_type == "chief" else f"{task_type} {index}"


def cluster() -> Cluster:
  """This process' `Cluster`, from the `TF_CONFIG` environment variable.

  Raises:
    ValueError: TF_CONFIG is not JSON, lacks `cluster` / `task`, names task
      types other than "chief" and "worker" (parameter servers, a side-car
      evaluator: part_tf does not run them), or a task it has not.
  """
  text = os.environ.get("TF_CONFIG", "").strip()
  if not text:
    return Cluster()
  try:
    config = json.loads(text)
    spec = {job: list(tasks) for job, tasks in
            (config.get("cluster") or {}).items()}
    task = config.get("task") or {}
    task_type = task.get("type")
    task_index = int(task.get("index", 0))
  except (ValueError, AttributeError, TypeError) as e:
    raise ValueError(f"TF_CONFIG is not a valid cluster description: {e}"
                     ) from None
  others = sorted(({job for job, tasks in spec.items() if tasks}
                   | {task_type} - {None}) - set(TASK_TYPES))
  if others:
    raise ValueError(
        f"TF_CONFIG names {' and '.join(others)} tasks, which part_tf does "
        "not run: it "
        "trains with MultiWorkerMirroredStrategy, whose tasks are "
        "\"chief\" and \"worker\" only")
  workers = len(spec.get("chief", [])) + len(spec.get("worker", []))
  if workers and task_type is None:
    raise ValueError("TF_CONFIG names a cluster but no task (\"task\": "
                     "{\"type\": \"worker\", \"index\": N})")
  if len(spec.get("chief", [])) > 1:
    raise ValueError(f"TF_CONFIG names {len(spec['chief'])} chief tasks; "
                     "a cluster has at most one")
  if workers and not 0 <= task_index < len(spec.get(task_type, [])):
    raise ValueError(
        f"TF_CONFIG's task is {_task_name(task_type, task_index)}, but its "
        f"cluster names {len(spec.get(task_type, []))} {task_type} task"
        f"{'' if len(spec.get(task_type, [])) == 1 else 's'}")
  tasks = tuple((_task_name(job, i), str(address))
                for job in TASK_TYPES
                for i, address in enumerate(spec.get(job, [])))
  return Cluster(num_workers=max(workers, 1), task_type=task_type,
                 task_index=task_index, has_chief=bool(spec.get("chief")),
                 tasks=tasks)


def resolve(name: str, tpu: str | None = None) -> str:
  """The concrete strategy `name` stands for on this machine ("auto")."""
  if name not in STRATEGIES:
    raise ValueError(f"unknown strategy {name!r}; valid: "
                     f"{', '.join(STRATEGIES)}")
  if name != "auto":
    return name
  if tpu:
    return "tpu"
  if cluster().num_workers > 1:
    return "multi_worker"
  if len(tf.config.list_physical_devices("GPU")) > 1:
    return "mirrored"
  return "one_device"


def split_cpu(count: int) -> None:
  """Splits the CPU into `count` logical devices (before TF runs any op), so
  that `mirrored` has `count` replicas on a machine without GPUs: for tests
  and for trying distribution out; it adds no speed."""
  cpu = tf.config.list_physical_devices("CPU")[0]
  configured = len(tf.config.get_logical_device_configuration(cpu) or [None])
  if count == configured:
    return
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError:
    raise ValueError(f"cannot split the CPU into {count} devices: this "
                     f"process runs TensorFlow on {configured} already "
                     "(split it before TensorFlow runs anything)") from None


def create(name: str, tpu: str | None = None,
           cluster_timeout: float = DEFAULT_CLUSTER_TIMEOUT
           ) -> tf.distribute.Strategy:
  """The strategy `resolve(name, tpu)` names.

  Must run before TF executes any op (MultiWorkerMirroredStrategy and TPU
  initialisation need that).

  Args:
    name: one of `STRATEGIES`.
    tpu: TPU address or name, for "tpu".
    cluster_timeout: "multi_worker": seconds to wait for every task of the
      TF_CONFIG cluster to start.

  Raises:
    ValueError: the strategy cannot run here, e.g. TF_CONFIG names tasks
      part_tf does not run, this task's port is taken, or the other tasks
      did not join within `cluster_timeout` (one line, says why).
  """
  cluster()  # refuses a TF_CONFIG part_tf cannot run, whatever the strategy
  name = resolve(name, tpu)
  if name == "one_device":
    return tf.distribute.get_strategy()
  if name == "mirrored":
    gpus = tf.config.list_logical_devices("GPU")
    devices = [d.name for d in gpus] or [
        d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
  if name == "multi_worker":
    worker = cluster()
    if worker.num_workers < 2:
      raise ValueError("--strategy=multi_worker needs a TF_CONFIG naming "
                       "the job's workers (see docs/scaling.md)")
    return multi_worker.start(worker, cluster_timeout)
  if not tpu:
    raise ValueError("--strategy=tpu needs --tpu=ADDRESS or NAME (use "
                     "--tpu=local on a TPU VM)")
  try:
    # "local": the TPU attached to this VM (TPUClusterResolver's own name).
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except (ValueError, tf.errors.OpError, RuntimeError) as e:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise ValueError(f"--tpu={tpu}: no TPU found ({first})") from None
  return tf.distribute.TPUStrategy(resolver)


def kind(strategy: tf.distribute.Strategy) -> str:
  """The `STRATEGIES` name of a strategy object."""
  if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
    return "multi_worker"
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return "tpu"
  if isinstance(strategy, tf.distribute.MirroredStrategy):
    return "mirrored"
  return "one_device"


def in_multi_worker_mode(strategy=None) -> bool:
  """Whether `strategy` (default: the current one) spans several workers."""
  strategy = strategy or tf.distribute.get_strategy()
  return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
          and strategy.extended._in_multi_worker_mode())  # pylint: disable=protected-access


def multi_worker_logs(logs: dict) -> dict:
  """A train or test step's logs in the shape Keras 3 can reduce.

  Under MultiWorkerMirroredStrategy Keras reduces each log with
  `strategy.reduce("MEAN", value, axis=0)`, which rejects scalars; a [1]
  vector per replica reduces to the scalar mean, as the "mean" of other
  strategies does. Elsewhere the logs are returned as they are.
  """
  if not in_multi_worker_mode():
    return logs
  return {name: tf.reshape(value, [1]) for name, value in logs.items()}


def broadcast_first_replica(variables, strategy) -> None:
  """Gives every replica the first replica's values of `variables`.

  Keras' batch-norm moving statistics have no aggregation: each replica
  updates its own copy from its own share of the batch, so the copies
  drift apart (on other workers too), while checkpoints and exports hold
  the first replica's. Call this before evaluating on every replica, and at
  each epoch start so that a resumed run (whose copies all start from the
  saved first-replica values) equals an uninterrupted one. A collective: all
  workers must call it together.
  """
  variables = list(variables)
  if strategy.num_replicas_in_sync == 1 or not variables:
    return

  @tf.function
  def broadcast():
    def first_values():
      context = tf.distribute.get_replica_context()
      first = tf.equal(context.replica_id_in_sync_group, 0)
      return [context.all_reduce(tf.distribute.ReduceOp.SUM, tf.where(
          first, tf.convert_to_tensor(v), tf.zeros(v.shape, v.dtype)))
              for v in variables]
    values = strategy.run(first_values)
    for variable, value in zip(variables, values):
      variable.assign(strategy.experimental_local_results(value)[0])

  broadcast()


def sum_over_replicas(value: tf.Tensor) -> tf.Tensor:
  """`value` summed over the replicas of the current strategy (itself when
  there is one replica, or outside a replica context)."""
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return value
  return context.all_reduce(tf.distribute.ReduceOp.SUM, value)
