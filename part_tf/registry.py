"""Registries: the names under which part_tf finds its components.

Every extension point has one registry (datasets, models, CAM methods, mask
rules, attacks, methods, regularisers), and a component registers itself
where it is defined, with a decorator:

  @part_tf.registry.METHODS.register("my_method")
  class MyMethod(part_tf.methods.Method):
    ...

The flags take their choices from the registries, and the library looks
components up by name, so a new component needs no edit anywhere else: a
module of your own, imported before the flags are parsed (`--plugins=NAME`
for the scripts), is enough.

Importing this module imports neither TensorFlow nor Keras.
"""

from typing import Any, Callable, Iterator


class Registry:
  """Components of one kind, by name, in the order they were registered.

  Args:
    kind: what the components are, for messages ("method", "model", ...).

  Example:
    >>> MODELS = Registry("model")
    >>> @MODELS.register("tiny")
    ... def tiny(input_shape, num_classes): ...
    >>> MODELS.get("tiny")
  """

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, Any] = {}

  def register(self, name: str, entry: Any = None) -> Callable:
    """Registers `entry` under `name`; used bare as a decorator.

    Raises:
      ValueError: `name` is taken by another entry (registering the same
        entry again, e.g. on a module reload, is fine).
    """
    if not isinstance(name, str) or not name or not name.replace(
        "_", "").isalnum():
      raise ValueError(f"a {self.kind} name must be letters, digits and "
                       f"underscores, got {name!r}")

    def add(value):
      known = self._entries.get(name)
      if known is not None and _identity(known) != _identity(value):
        raise ValueError(f"a {self.kind} named {name!r} is registered "
                         f"already ({_identity(known)})")
      self._entries[name] = value
      return value

    return add if entry is None else add(entry)

  def get(self, name: str) -> Any:
    """The entry named `name`.

    Raises:
      ValueError: no such entry; the message lists the known names.
    """
    try:
      return self._entries[name]
    except (KeyError, TypeError):
      raise ValueError(f"unknown {self.kind} {name!r}; choose one of "
                       f"{', '.join(self._entries)}") from None

  def __getitem__(self, name: str) -> Any:
    return self.get(name)

  def remove(self, name: str) -> None:
    """Unregisters `name` (tests that register components of their own)."""
    self._entries.pop(name, None)

  def names(self) -> tuple:
    """The registered names, in registration order."""
    return tuple(self._entries)

  def items(self):
    return self._entries.items()

  def __contains__(self, name) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def __len__(self) -> int:
    return len(self._entries)

  def __repr__(self) -> str:
    return f"Registry({self.kind!r}: {', '.join(self._entries)})"


def _identity(value) -> str:
  """Module and name of a registered object (a class or function, or the
  class of an instance), so that a module imported twice (as a script and
  as a module, or reloaded) registers the same thing again."""
  target = value if hasattr(value, "__qualname__") else type(value)
  return f"{getattr(target, '__module__', '?')}.{target.__qualname__}" + (
      "" if target is value else f"({getattr(value, 'name', '')})")


DATASETS = Registry("dataset")
MODELS = Registry("model")
CAM_METHODS = Registry("CAM method")
MASK_RULES = Registry("mask rule")
ATTACKS = Registry("attack")
METHODS = Registry("method")
REGULARISERS = Registry("regulariser")
