"""The test harness' warm process (`tests/commands.py`): what it learns from
its children is what a fresh interpreter would compute."""

import json
import sys
from unittest import mock

from keras.src.backend.tensorflow.layer import TFLayer
import pytest
import tensorflow as tf

from part_tf import evaluation
from part_tf.attacks.pgd import project_linf
from part_tf.training.part_model import PARTModel
from tests import commands

# A child that reports whether AutoGraph had `project_linf` converted before
# it traced it, and what the traced function gives.
_CHILD = """
import json
import tensorflow as tf
from tensorflow.python.autograph.impl import api
from part_tf.attacks.pgd import project_linf
cached = project_linf.__code__ in api._TRANSPILER._cache._cache
x = tf.constant([[0.5, 0.9, 0.1]])
out = tf.function(project_linf)(x + [[0.3, 0.3, -0.3]], x, 0.2)
print(json.dumps({"cached": cached, "out": out.numpy().tolist()}))
"""


class LearnedConversionsTest(tf.test.TestCase):

  @pytest.mark.slow  # starts a zygote of its own
  def test_a_later_child_inherits_an_earlier_childs_conversion(self):
    # A zygote of this test's own, which no other test has taught.
    with mock.patch.object(commands, "_zygote", None):
      answers = []
      for _ in range(2):
        result = commands.run([sys.executable, "-c", _CHILD],
                              capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr[-2000:])
        answers.append(json.loads(result.stdout.splitlines()[-1]))
      process, _ = commands._zygote  # pylint: disable=protected-access
      process.stdin.close()
      process.wait(30)
    self.assertEqual([a["cached"] for a in answers], [False, True])
    self.assertAllClose(answers[0]["out"], [[0.7, 1.0, 0.0]])
    self.assertEqual(answers[1]["out"], answers[0]["out"])

  def test_records_find_module_and_nested_functions(self):
    linf = {"module": "part_tf.attacks.pgd", "qualname": "project_linf",
            "line": project_linf.__code__.co_firstlineno}
    self.assertIs(commands._function(linf), project_linf)  # pylint: disable=protected-access
    nested, = [c for c in evaluation._compiled.__code__.co_consts  # pylint: disable=protected-access
               if getattr(c, "co_name", None) == "one_device"]
    found = commands._function(  # pylint: disable=protected-access
        {"module": "part_tf.evaluation",
         "qualname": "_compiled.<locals>.one_device",
         "line": nested.co_firstlineno})
    self.assertIs(found.__code__, nested)
    self.assertEqual(len(found.__closure__), len(nested.co_freevars))
    # A method, and a function nested in a property of a class.
    budget = {"module": "part_tf.training.part_model",
              "qualname": "PARTModel.budget",
              "line": PARTModel.budget.__code__.co_firstlineno}
    self.assertIs(commands._function(budget), PARTModel.budget)  # pylint: disable=protected-access
    signature = vars(TFLayer)["_default_save_signature"].fget
    serving, = [c for c in signature.__code__.co_consts
                if getattr(c, "co_name", None) == "serving_default"]
    found = commands._function(  # pylint: disable=protected-access
        {"module": TFLayer.__module__,
         "qualname": "TFLayer._default_save_signature.<locals>."
                     "serving_default", "line": serving.co_firstlineno})
    self.assertIs(found.__code__, serving)
    # A record that no longer matches the code (an edited line, a module
    # the zygote lacks) finds nothing: the child converts it itself.
    self.assertIsNone(commands._function({**linf, "line": linf["line"] + 1}))  # pylint: disable=protected-access
    self.assertIsNone(commands._function({**linf, "module": "not.there"}))  # pylint: disable=protected-access


# A command that starts a python command of its own (as compare.py starts
# train.py), first with no thread of its own, then with one: it prints the
# two children's answers and its own pid, session and process group.
_CHILD_OF_CHILD = """
import json, os, sys
from absl import flags
print(json.dumps({"warm": "tensorflow" in sys.modules, "ppid": os.getppid(),
                  "sid": os.getsid(0), "pgid": os.getpgid(0),
                  "parent_flag": "parent_only" in flags.FLAGS,
                  "argv": sys.argv[1:]}))
"""
_PARENT = """
import atexit, json, os, subprocess, sys, threading
from absl import flags
flags.DEFINE_string("parent_only", "set", "A flag of the parent's.")
flags.FLAGS(sys.argv)
atexit.register(print, "the parent's atexit handler")
answers = []
for threaded in (False, True):
  if threaded:
    threading.Thread(target=threading.Event().wait, daemon=True).start()
  answers.append(subprocess.run(
      [sys.executable, "-c", sys.argv[1], "--x"], check=True,
      capture_output=True, text=True).stdout)
print(json.dumps({"pid": os.getpid(), "sid": os.getsid(0),
                  "pgid": os.getpgid(0), "children": answers}))
"""


class CommandsOfChildrenTest(tf.test.TestCase):

  def test_a_childs_python_command_is_its_own_fork_unless_it_has_threads(
      self):
    result = commands.run(
        [sys.executable, "-c", _PARENT, _CHILD_OF_CHILD], capture_output=True,
        text=True, timeout=120, start_new_session=True)
    self.assertEqual(result.returncode, 0, result.stderr[-2000:])
    *_, line, last = result.stdout.splitlines()
    self.assertEqual(last, "the parent's atexit handler")
    parent = json.loads(line)
    forked, started = parent["children"]
    # Without a thread: forked (TensorFlow already imported); with none of
    # its parent's atexit handlers, its output is its one line.
    self.assertLen(forked.splitlines(), 1)
    forked = json.loads(forked)
    self.assertTrue(forked["warm"])
    # With one: an ordinary subprocess (a fresh interpreter).
    started = json.loads(started.splitlines()[-1])
    self.assertFalse(started["warm"])
    # Either way a child of the command, in its session and process group
    # (a kill of the group takes both), with flags of its own.
    for child in (forked, started):
      self.assertEqual(
          (child["ppid"], child["sid"], child["pgid"], child["parent_flag"],
           child["argv"]),
          (parent["pid"], parent["sid"], parent["pgid"], False, ["--x"]))
    self.assertEqual(parent["sid"], parent["pid"])  # its own session


if __name__ == "__main__":
  tf.test.main()
