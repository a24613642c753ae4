"""Starting a multi-worker job: its tasks join within a timeout or all stop
in one line, and its workers compare their settings before they train.

TensorFlow's own start-up waits for ever where a job cannot assemble: a
task whose TF_CONFIG port is taken fails with "Could not start gRPC server"
(no port named) while its peers wait, and a task whose peers never start
waits without a word (the coordination service gives them an hour). Here:

  - a task checks that its TF_CONFIG port is free before it starts, and
    names the port if not;
  - the tasks register with the coordination service behind a barrier that
    fails after `timeout` seconds; each task then names the peers whose
    address does not answer (or that answer without joining);
  - TensorFlow's dozens of C++ log lines about that failure are dropped, so
    that the one-line error is what a user reads (`quiet_teardown` drops
    what its runtime logs at exit, too);
  - `check_same_everywhere` exchanges the workers' settings through the
    coordination service's key-value store before the first step: workers
    that differ would otherwise train with their own settings, or fail
    epochs later in a collective.

Tasks are named as in messages: "chief", "worker 0", "worker 1", ...
(`part_tf.distribution.Cluster.name`).
"""

import contextlib
import errno
import json
import os
import sys
import tempfile

import tensorflow as tf

from part_tf import addresses

# Whether this process started TensorFlow's multi-worker runtime, whose
# teardown at exit logs (see `quiet_teardown`).
_runtime_started = False


def start(worker, timeout: float) -> tf.distribute.Strategy:
  """MultiWorkerMirroredStrategy over the TF_CONFIG cluster, once all of its
  tasks have joined.

  Must run before TensorFlow executes any op.

  Args:
    worker: this process' `part_tf.distribution.Cluster` (two tasks or
      more).
    timeout: seconds to wait for every task to join.

  Raises:
    ValueError: this task's port is taken, or the other tasks did not all
      join within `timeout` (one line naming the ports or addresses).
  """
  global _runtime_started
  port = addresses.split(worker.address)[1]
  taken = addresses.port_taken(port)
  if taken is not None:
    reason = ("is in use by another program"
              if taken.errno == errno.EADDRINUSE else
              f"cannot be used ({taken.strerror})")
    raise ValueError(f"cannot start {worker.name}: port {port} of its "
                     f"TF_CONFIG address {worker.address} {reason}")
  _configure_coordination(worker, timeout)
  _runtime_started = True
  failure = None
  try:
    with _stderr_dropped_on_failure():
      strategy = tf.distribute.MultiWorkerMirroredStrategy()
  except tf.errors.OpError as e:
    failure = e  # raised below, outside this block: no chained traceback
  if failure is None:
    return strategy
  if "Could not start gRPC server" in str(failure):  # taken since the check
    raise ValueError(f"cannot start {worker.name}: TensorFlow could not "
                     f"listen on port {port} of its TF_CONFIG address "
                     f"{worker.address}")
  raise ValueError(_not_joined(worker, timeout, failure))


def _configure_coordination(worker, timeout: float) -> None:
  """The coordination service MultiWorkerMirroredStrategy sets up (it keeps
  one that is configured), with the tasks registering behind a barrier that
  fails after `timeout` seconds: without it a task waits for a missing peer
  for an hour (TensorFlow's default), on the leader without a word."""
  # pylint: disable-next=g-import-not-at-top
  from tensorflow.python.eager import context
  jobs = [name.split()[0] for name, _ in worker.tasks]
  leader = "chief" if "chief" in jobs else "worker"
  ctx = context.context()
  ctx.configure_coordination_service(
      service_type="standalone",
      service_leader=f"/job:{leader}/replica:0/task:0",
      cluster_register_timeout_in_ms=max(1, int(timeout * 1000)))
  config = ctx.coordination_service
  config.cluster_register_with_barrier = True
  for job in ("chief", "worker"):
    if job in jobs:
      config.coordinated_job_list.add(name=job, num_tasks=jobs.count(job))


@contextlib.contextmanager
def _stderr_dropped_on_failure():
  """Holds what is written to file descriptor 2 while the body runs: written
  out after it succeeds, dropped if it raises.

  A job that cannot assemble makes TensorFlow's C++ runtime log dozens of
  lines about barriers and RPCs; the one-line error that follows names the
  addresses instead.
  """
  sys.stderr.flush()
  held = tempfile.TemporaryFile()
  saved = os.dup(2)
  os.dup2(held.fileno(), 2)
  succeeded = False
  try:
    yield
    succeeded = True
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    if succeeded:
      held.seek(0)
      while chunk := held.read(65536):
        os.write(2, chunk)
    held.close()


def _not_joined(worker, timeout: float, error: Exception) -> str:
  """The one-line error of a task whose peers did not all join the job:
  the peers that do not answer at their address, or that answer but did
  not join."""
  peers = [(name, address) for name, address in worker.tasks
           if name != worker.name]
  silent = [f"{name} at {address}" for name, address in peers
            if not addresses.answers(address)]
  waited = f"within {timeout:g} s (--cluster_timeout)"
  if silent:
    return (f"{worker.name} could not reach {', '.join(silent)} {waited}: "
            "start every task that TF_CONFIG names, or give the slow ones "
            "a longer --cluster_timeout")
  if isinstance(error, tf.errors.DeadlineExceededError):
    others = ", ".join(f"{name} at {address}" for name, address in peers)
    one = len(peers) == 1
    return (f"{worker.name}: {others} answer{'s' if one else ''} but "
            f"did not {'join' if one else 'all join'} the job {waited}: is "
            f"another program using {'its port' if one else 'a port'}, or a "
            "task started with another TF_CONFIG?")
  first = (str(error).strip().splitlines() or [""])[0][:200]
  return (f"{worker.name} could not join the job: {type(error).__name__}: "
          f"{first}")


def quiet_teardown() -> None:
  """Points file descriptor 2 at /dev/null if this process started
  TensorFlow's multi-worker runtime, whose teardown at exit logs lines of
  its own after a failure: call it after printing a one-line error, just
  before exiting."""
  if not _runtime_started:
    return
  sys.stderr.flush()
  with open(os.devnull, "wb") as null:
    os.dup2(null.fileno(), 2)


def check_same_everywhere(worker, values: dict, timeout: float) -> None:
  """Makes the tasks of a multi-worker job compare `values` (each task's
  settings) before they train together.

  Every task publishes its values in the job's coordination service and
  reads everyone's, so that all of them raise the same error, which names
  each differing setting with every task's value. A collective: every task
  must call it, after `start`.

  Args:
    worker: this process' `part_tf.distribution.Cluster`.
    values: JSON-able settings that must be equal on every task.
    timeout: seconds to wait for the other tasks' values.

  Raises:
    ValueError: the values differ, or a task did not send its own within
      `timeout`.
  """
  # pylint: disable-next=g-import-not-at-top
  from tensorflow.python.eager import context
  ctx = context.context()
  milliseconds = max(1, int(timeout * 1000))
  key = "part_tf/settings/"
  ctx.set_config_key_value(key + worker.name,
                           json.dumps(values, sort_keys=True))
  everyone = {}
  timed_out = False
  try:
    for name, _ in worker.tasks:
      everyone[name] = json.loads(ctx.get_config_key_value(key + name,
                                                           milliseconds))
    # The leader, which holds the values, stays until all have read them.
    ctx.wait_at_barrier("part_tf/settings_read", milliseconds)
  except tf.errors.OpError:
    timed_out = True
  # A task with every value knows the answer even if the barrier failed:
  # the leader, having passed it, may exit on the same difference before its
  # service answers this task's wait.
  missing = [name for name, _ in worker.tasks if name not in everyone]
  differences = None if missing else differing_settings(everyone)
  if differences:
    raise ValueError(f"the workers' settings differ: {differences}")
  if timed_out:
    raise ValueError(
        f"{worker.name}: {', '.join(missing) or 'a task'} did not send "
        f"{'their' if len(missing) > 1 else 'its'} settings within "
        f"{timeout:g} s (--cluster_timeout)")


_UNSET = object()


def differing_settings(everyone: dict) -> str:
  """"--name (task: value, task: value); ..." for each setting whose value
  differs between the tasks of `everyone` ({task name: {setting: value}}),
  or "" if none does."""
  names = sorted(set().union(*everyone.values()))
  parts = []
  for setting in names:
    found = [values.get(setting, _UNSET) for values in everyone.values()]
    if any(value != found[0] for value in found[1:]):
      parts.append(f"--{setting} (" + ", ".join(
          f"{task}: " + (json.dumps(values[setting]) if setting in values
                         else "unset")
          for task, values in everyone.items()) + ")")
  return "; ".join(parts)
