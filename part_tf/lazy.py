"""Modules imported on first use, so that part_tf's components can be read
without loading TensorFlow.

The flags, `--help`, the docs' settings table and every config read the
built-in components (their names and settings) through the registries. The
files that define those components therefore import TensorFlow and Keras
lazily, where they compute:

  from part_tf import lazy
  tf = lazy.load("tensorflow")   # the real module at the first `tf.xxx`

Code then reads as usual (`tf.reduce_sum(...)`); the import happens when a
component first computes something, which is inside a model's train step or
an attack, long after the flags are parsed. A component of your own
(`--plugins`) may simply `import tensorflow as tf`.
"""

import importlib
import types


class _LazyModule(types.ModuleType):
  """A module object that imports the real module at its first attribute
  access and forwards every access to it."""

  def __init__(self, name: str):
    super().__init__(name)
    self._lazy_name = name

  def _module(self):
    return importlib.import_module(self._lazy_name)

  def __getattr__(self, attribute):
    if attribute.startswith("__") and attribute.endswith("__"):
      # Introspection (copy, pickle, doctest) must not import anything.
      raise AttributeError(attribute)
    return getattr(self._module(), attribute)

  def __dir__(self):
    return dir(self._module())

  def __repr__(self):
    return f"<lazily imported module {self._lazy_name!r}>"


def load(name: str) -> types.ModuleType:
  """`name` (e.g. "tensorflow"), imported when one of its attributes is
  first used."""
  return _LazyModule(name)
