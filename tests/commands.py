"""The project's scripts as processes that start in a fraction of a second.

A script run as `python scripts/train.py ...` spends 6-8 seconds importing
TensorFlow, Keras and part_tf before it reads its first flag, and the suite
runs a few hundred of them. `Popen` and `run` here are drop-in replacements
for `subprocess.Popen` and `subprocess.run` that start such a command as a
fork of a warm process (a "zygote": one per test process, started on first
use, which has imported those libraries and nothing else, and has run no
TensorFlow op, so it has no threads to lose in a fork):

    result = commands.run([sys.executable, TRAIN, "--epochs=1", ...],
                          capture_output=True, text=True, timeout=300)

The child is a real process: its own pid (signals, `kill -9`, locks and
exit codes behave as they do for a fresh one), its own cwd, environment,
`sys.argv`, `sys.path` (the script's folder first, then PYTHONPATH) and
standard streams, and it runs the script as `__main__` with `runpy`, as
`python` does. What it does not repeat is the import of the preloaded
libraries (and AutoGraph's conversion of the functions that earlier children
converted: see "AutoGraph conversions" below), so what those imports print
(TensorFlow's start-up lines on stderr) and environment variables read only
at import time are those of the zygote. Tests about exactly that
(`test_console`: start-up stderr; `test_packaging`: installed console
scripts) use `subprocess` itself.

The python commands that such a command starts itself (`compare.py` runs
`train.py` per run) are forked from it while it has no thread, so that they
too skip the imports: real children of it, whose waits, signals and process
groups are the product's own (see "The python commands a child starts"
below). Commands other than
`python SCRIPT`, `python -c CODE` or `python -m MODULE`
(and any command when `PART_TF_TESTS_NO_ZYGOTE=1`) start as ordinary
subprocesses.

Protocol: the client sends one JSON request with the child's standard
streams (`socket.send_fds`) over a Unix socket; the zygote forks a monitor
for the connection, which forks the child, sends its pid, waits for it and
sends its wait status. The zygote exits when its test process does (end of
its stdin).
"""

import atexit
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# What the zygote imports before it forks: the slow imports of every script.
# Not part_tf_flags.cli.* (they define absl flags at import, once per process).
PRELOAD = ("numpy", "tensorflow", "keras", "tensorflow_datasets",
           "tf_keras_vis.gradcam_plus_plus", "absl.app", "absl.flags",
           "matplotlib.pyplot", "h5py", "part_tf", "part_tf.experiment",
           "part_tf.evaluation_report", "part_tf.attack_suite",
           "part_tf.attack_catalogue", "part_tf.export")
_DISABLE = "PART_TF_TESTS_NO_ZYGOTE"
# The zygote's file of the functions its children had AutoGraph convert.
_CONVERTED = None
_lock = threading.Lock()
_zygote = None  # (Popen of the zygote, socket path), started on first use


# --- client --------------------------------------------------------------------

def _entry(args):
  """(kind, target, script args) of a `python ...` command the zygote can
  run, or None."""
  if isinstance(args, (str, bytes)) or len(args) < 2:
    return None
  args = [os.fspath(a) for a in args]
  if args[0] != sys.executable:
    return None
  if args[1] in ("-c", "-m"):
    if len(args) < 3:
      return None
    return ("code" if args[1] == "-c" else "module", args[2], args[3:])
  if args[1].startswith("-") or not args[1].endswith(".py"):
    return None
  return ("script", args[1], args[2:])


def _plain(shell, executable, preexec_fn, pass_fds, rest) -> bool:
  """Whether a Popen asks for nothing but a command, streams, cwd, env,
  umask and a new session (what a forked child can be given)."""
  return not (shell or executable or preexec_fn or pass_fds
              or any(v is not None for v in rest[1:4])
              or (len(rest) > 6 and rest[6] != -1))


def _request(entry, cwd, env, rest) -> dict:
  """What a forked child becomes (see `_child`)."""
  kind, target, script_args = entry
  return {
      "kind": kind, "target": target, "argv": script_args,
      "cwd": os.path.abspath(os.fspath(cwd)) if cwd else os.getcwd(),
      "env": dict(os.environ) if env is None else {
          os.fsdecode(k): os.fsdecode(v) for k, v in env.items()},
      "new_session": bool(rest[5]),
      "umask": rest[4]}


def _address():
  """The socket of this process' zygote (started now if need be)."""
  global _zygote
  with _lock:
    if _zygote is not None and _zygote[0].poll() is None:
      return _zygote[1]
    folder = tempfile.mkdtemp(prefix="part_tf_zygote_")
    path = os.path.join(folder, "socket")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (ROOT, env.get("PYTHONPATH")) if p)
    process = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, "-m", "tests.commands", path], cwd=ROOT, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not os.path.exists(path):
      if process.poll() is not None or time.monotonic() > deadline:
        process.kill()
        raise RuntimeError("the test zygote did not start")
      time.sleep(0.05)

    def stop(process=process, folder=folder):
      process.stdin.close()  # the zygote exits at the end of its stdin
      try:
        process.wait(10)
      except subprocess.TimeoutExpired:
        process.kill()
      for name in os.listdir(folder):
        os.remove(os.path.join(folder, name))
      os.rmdir(folder)

    atexit.register(stop)
    _zygote = (process, path)
    return path


class _PythonCommandPopen(subprocess.Popen):
  """A `subprocess.Popen` that hands a plain `python SCRIPT|-c|-m` command
  (`_entry`, `_plain`) to `_start` when `_may_start()`, and starts any other
  command as `subprocess.Popen` does."""

  def _may_start(self) -> bool:
    raise NotImplementedError

  def _start(self, args, request, fds, pipes):
    """Starts the child that `request` describes, with `fds` as its stdin,
    stdout and stderr; closes the child's ends of `pipes` (Popen's six pipe
    fds)."""
    raise NotImplementedError

  def _execute_child(self, args, executable, preexec_fn, close_fds,
                     pass_fds, cwd, env, startupinfo, creationflags, shell,
                     p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite,
                     *rest):
    # rest: restore_signals, gid, gids, uid, umask, start_new_session,
    # process_group (Python 3.11).
    entry = (_entry(args) if _plain(shell, executable, preexec_fn, pass_fds,
                                    rest) and self._may_start() else None)
    if entry is None:
      return super()._execute_child(
          args, executable, preexec_fn, close_fds, pass_fds, cwd, env,
          startupinfo, creationflags, shell, p2cread, p2cwrite, c2pread,
          c2pwrite, errread, errwrite, *rest)
    fds = [p2cread if p2cread != -1 else 0, c2pwrite if c2pwrite != -1 else 1,
           errwrite if errwrite != -1 else 2]
    self._start(args, _request(entry, cwd, env, rest), fds,
                (p2cread, p2cwrite, c2pread, c2pwrite, errread, errwrite))


class Popen(_PythonCommandPopen):
  """`subprocess.Popen`, started by the zygote when the command is
  `python SCRIPT|-c CODE|-m MODULE ...` (see the module docstring)."""

  _connection = None

  def _may_start(self) -> bool:
    return os.environ.get(_DISABLE) != "1"

  def _start(self, args, request, fds, pipes):
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
      connection.connect(_address())
      payload = json.dumps(request).encode()
      socket.send_fds(connection, [len(payload).to_bytes(8, "big") + payload],
                      fds)
      reply = _read_line(connection)
    except BaseException:
      connection.close()
      raise
    # As Popen does: the child's ends of the pipes are the child's now.
    self._close_pipe_fds(*pipes)
    if not reply.startswith(b"pid "):
      connection.close()
      raise OSError(f"the test zygote could not start {args!r}: "
                    f"{reply.decode(errors='replace')}")
    self.pid = int(reply.split()[1])
    self._connection = connection
    self._child_created = True

  def _internal_poll(self, _deadstate=None, _waitpid=None, _WNOHANG=None,
                     _ECHILD=None):
    if self._connection is None:
      return super()._internal_poll()
    self._status(0)
    return self.returncode

  def _wait(self, timeout):
    if self._connection is None:
      return super()._wait(timeout)
    if self.returncode is not None:
      return self.returncode
    if self._status(timeout) is None:
      raise subprocess.TimeoutExpired(self.args, timeout)
    return self.returncode

  def _status(self, timeout):
    """Reads the child's wait status when it comes within `timeout` seconds
    (None: block); sets `returncode`. One thread at a time reads it, as
    `subprocess.Popen` waits (`_waitpid_lock`): a poll while another thread
    waits returns None, and a waiter that comes second finds the status
    the first has read."""
    if self.returncode is not None:
      return self.returncode
    lock = self.__dict__.setdefault("_status_lock", threading.Lock())
    if not (lock.acquire(False) if timeout == 0 else lock.acquire(
        True, -1 if timeout is None else timeout)):
      return None
    try:
      if self.returncode is not None:
        return self.returncode
      with selectors.DefaultSelector() as selector:
        selector.register(self._connection, selectors.EVENT_READ)
        if not selector.select(timeout):
          return None
      line = _read_line(self._connection)
      self._connection.close()
      if not line.startswith(b"status "):
        self.returncode = -signal.SIGKILL  # the monitor died: report a kill
      else:
        self.returncode = os.waitstatus_to_exitcode(int(line.split()[1]))
      return self.returncode
    finally:
      lock.release()

  def send_signal(self, sig):
    self.poll()
    if self.returncode is None:
      try:
        os.kill(self.pid, sig)
      except ProcessLookupError:
        pass


def _read_line(connection) -> bytes:
  data = b""
  while not data.endswith(b"\n"):
    chunk = connection.recv(1)
    if not chunk:
      break
    data += chunk
  return data.strip()


def run(*popenargs, input=None, capture_output=False, timeout=None,  # pylint: disable=redefined-builtin
        check=False, **kwargs):
  """`subprocess.run` through `Popen` (the zygote for python commands)."""
  if capture_output:
    kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
  if input is not None:
    kwargs["stdin"] = subprocess.PIPE
  with Popen(*popenargs, **kwargs) as process:
    try:
      stdout, stderr = process.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired as e:
      process.kill()
      e.stdout, e.stderr = process.communicate()
      raise
    except BaseException:
      process.kill()
      raise
    code = process.poll()
  if check and code:
    raise subprocess.CalledProcessError(code, process.args, stdout, stderr)
  return subprocess.CompletedProcess(process.args, code, stdout, stderr)


# --- zygote --------------------------------------------------------------------

def _serve(path):
  import importlib  # pylint: disable=g-import-not-at-top
  for name in PRELOAD:
    try:
      importlib.import_module(name)
    except ImportError:
      pass
  base_path = [p for p in sys.path[1:]
               if p not in os.environ.get("PYTHONPATH", "").split(os.pathsep)]
  global _CONVERTED
  _CONVERTED = path + ".converted"
  learned = _Conversions(_CONVERTED)
  signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # monitors reap themselves
  listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
  listener.bind(path + ".tmp")
  listener.listen(64)
  os.rename(path + ".tmp", path)
  with selectors.DefaultSelector() as selector:
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)
    while True:
      for key, _ in selector.select():
        if key.fileobj is not listener:
          if not sys.stdin.buffer.read1(1 << 16):  # the tests have ended
            return
          continue
        connection, _ = listener.accept()
        learned.convert_new()
        sys.stdout.flush()
        sys.stderr.flush()
        if os.fork() == 0:
          listener.close()
          try:
            _monitor(connection, base_path)
          finally:
            os._exit(0)
        connection.close()


def _monitor(connection, base_path):
  """Receives one request, forks its child, reports pid and wait status."""
  signal.signal(signal.SIGCHLD, signal.SIG_DFL)
  header, fds, _, _ = socket.recv_fds(connection, 8, 3)
  size = int.from_bytes(header, "big")
  payload = b""
  while len(payload) < size:
    payload += connection.recv(size - len(payload))
  request = json.loads(payload)
  pid = os.fork()
  if pid == 0:
    connection.close()
    _child(request, fds, base_path)  # never returns
  for fd in fds:
    os.close(fd)
  connection.sendall(f"pid {pid}\n".encode())
  _, status = os.waitpid(pid, 0)
  connection.sendall(f"status {status}\n".encode())


def _child(request, fds, base_path):
  """Becomes the requested command: streams, cwd, environment, argv, path,
  then runs it as `__main__` and exits with its code."""
  code = 1
  try:
    if request["new_session"]:
      os.setsid()
    if request["umask"] >= 0:
      os.umask(request["umask"])
    for target, fd in enumerate(fds):
      os.dup2(fd, target)
    for fd in fds:
      if fd > 2:
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    _fresh_streams()
    kind, target = request["kind"], request["target"]
    first = {"script": os.path.dirname(os.path.abspath(target)),
             "code": "", "module": os.getcwd()}[kind]
    extra = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
             if p]
    sys.path[:] = [first, *extra, *base_path]
    _record_conversions()
    global _BASE_PATH
    _BASE_PATH = base_path
    subprocess.Popen = _ForkingPopen  # the commands this one starts
    code = _run(kind, target, request["argv"])
  except BaseException:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    code = 1
  finally:
    try:
      atexit._run_exitfuncs()  # pylint: disable=protected-access
      sys.stdout.flush()
      sys.stderr.flush()
      _write_conversions()
    finally:
      os._exit(code)


def _run(kind, target, argv) -> int:
  """Runs the command as `python` would; returns its exit code."""
  import runpy  # pylint: disable=g-import-not-at-top
  try:
    if kind == "script":
      sys.argv = [target, *argv]
      runpy.run_path(target, run_name="__main__")
    elif kind == "module":
      sys.argv = [target, *argv]
      runpy.run_module(target, run_name="__main__", alter_sys=True)
    else:
      sys.argv = ["-c", *argv]
      namespace = {"__name__": "__main__", "__builtins__": __builtins__}
      exec(compile(target, "<string>", "exec"), namespace)  # pylint: disable=exec-used
  except SystemExit as e:
    if e.code is None:
      return 0
    if isinstance(e.code, int):
      return e.code
    print(e.code, file=sys.stderr)
    return 1
  except KeyboardInterrupt:
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    return 128 + signal.SIGINT  # as far as a test can tell, as python does
  except BaseException:  # pylint: disable=broad-except
    import traceback  # pylint: disable=g-import-not-at-top
    traceback.print_exc()
    return 1
  return 0


# --- the python commands a child starts ----------------------------------------
#
# compare.py runs train.py once per run (`subprocess.Popen`). A fresh
# interpreter spends 6-8 s on imports before the run starts. In a child of
# the zygote that has started no thread (it has run no TensorFlow op: a
# study's own process reads flags, starts runs and writes reports), such a
# command is forked from the child itself, as the zygote forks: a real child
# of it (its pid, process group and session; `waitpid`, signals and
# `os.killpg` behave as for a fresh process), which forgets what its parent
# set up for itself (atexit handlers, absl flags and values, the project's
# flag modules) before it runs the command. With a thread running, or for
# anything but a plain python command, it is an ordinary subprocess.

_BASE_PATH = None  # in a child of the zygote: sys.path after the script's


class _ForkingPopen(_PythonCommandPopen):
  """`subprocess.Popen` inside a child of the zygote (see above)."""

  def _may_start(self) -> bool:
    return _single_threaded()

  def _start(self, args, request, fds, pipes):
    del args
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
      _, p2cwrite, c2pread, _, errread, _ = pipes
      for fd in (p2cwrite, c2pread, errread):  # the parent's ends
        if fd != -1:
          os.close(fd)
      _forget_parent()
      _child(request, fds, _BASE_PATH)  # never returns
    self._close_pipe_fds(*pipes)
    self.pid = pid
    self._child_created = True


def _single_threaded() -> bool:
  return len(os.listdir("/proc/self/task")) == 1


def _forget_parent():
  """In a child forked from a running command: what a new interpreter
  would not have of its parent's."""
  atexit._clear()  # pylint: disable=protected-access
  _recorded.clear()  # the parent writes its own conversions
  for name in [m for m in sys.modules
               if m == "part_tf_flags" or m.startswith("part_tf_flags.")]:
    del sys.modules[name]  # they define their flags when imported
  absl_flags = sys.modules.get("absl.flags")
  if absl_flags is None:
    return
  values = absl_flags.FLAGS
  values.unparse_flags()
  for module, defined in list(values.flags_by_module_dict().items()):
    if not module.startswith("absl."):
      for flag in list(defined):
        for name in (flag.name, flag.short_name):
          if name and name in values:
            delattr(values, name)


# --- AutoGraph conversions learned from the children ---------------------------
#
# Tracing a tf.function first has AutoGraph rewrite each Python function it
# calls (parse, transform, load), once per process. The result is cached per
# code object and does not depend on the function's closure, so a conversion
# the zygote has made is one every later child inherits: a tiny train.py
# child takes 3.9 s instead of 5.3 s (medians of 10 runs). Each child
# appends the functions it converted to a file; before its next fork the
# zygote converts them too. Pure Python: no TensorFlow op runs in the zygote.
# A function it cannot find is simply converted again by the next child, as
# without this.

_recorded = []


def _record_conversions():
  """In a child: note each conversion that missed AutoGraph's cache."""
  try:
    from tensorflow.python.autograph.impl import api  # pylint: disable=g-import-not-at-top
  except ImportError:
    return
  transpiler = api._TRANSPILER  # pylint: disable=protected-access
  transform_function = transpiler.transform_function
  if getattr(transform_function, "recording", False):
    return  # a command's child: its parent's hook is in place

  def recording(fn, user_context):
    key = transpiler.get_caching_key(user_context)
    if not transpiler._cache.has(fn, key):  # pylint: disable=protected-access
      code = fn.__code__
      _recorded.append({
          "module": getattr(fn, "__module__", None),
          "qualname": getattr(fn, "__qualname__", code.co_name),
          "line": code.co_firstlineno,
          "options": [key.recursive, key.user_requested,
                      key.internal_convert_user_code,
                      sorted(f.name for f in key.optional_features)]})
    return transform_function(fn, user_context)

  recording.recording = True
  transpiler.transform_function = recording


def _write_conversions():
  if _recorded and _CONVERTED:
    data = "".join(json.dumps(r) + "\n" for r in _recorded).encode()
    fd = os.open(_CONVERTED, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
      os.write(fd, data)
    finally:
      os.close(fd)


class _Conversions:
  """The zygote's side: converts what its children recorded, once."""

  def __init__(self, path):
    self.path = path
    self.offset = 0
    self.done = set()

  def convert_new(self):
    try:
      with open(self.path, "rb") as f:
        f.seek(self.offset)
        data = f.read()
    except FileNotFoundError:
      return
    data = data[:data.rfind(b"\n") + 1]
    self.offset += len(data)
    for line in data.splitlines():
      record = json.loads(line)
      key = json.dumps(record, sort_keys=True)
      if key not in self.done:
        self.done.add(key)
        try:
          self._convert(record)
        except Exception:  # pylint: disable=broad-except
          pass  # the next child converts it itself

  @staticmethod
  def _convert(record):
    from tensorflow.python.autograph.core import converter  # pylint: disable=g-import-not-at-top
    from tensorflow.python.autograph.impl import api  # pylint: disable=g-import-not-at-top
    fn = _function(record)
    if fn is None:
      return
    recursive, user_requested, convert_user_code, features = record["options"]
    options = converter.ConversionOptions(
        recursive=recursive, user_requested=user_requested,
        internal_convert_user_code=convert_user_code,
        optional_features=tuple(converter.Feature[f] for f in features))
    api._TRANSPILER.transform(fn, converter.ProgramContext(options=options))  # pylint: disable=protected-access


def _function(record):
  """A function with the recorded code (a nested one gets empty-valued
  cells for its closure), or None. Only from modules the zygote has."""
  import types  # pylint: disable=g-import-not-at-top
  if record["module"] in (None, "__main__"):  # the child's script
    return None
  module = sys.modules.get(record["module"])
  if module is None:
    return None
  parts = record["qualname"].split(".")
  obj, code = module, None
  while parts:
    part = parts.pop(0)
    if part == "<locals>":
      name = parts.pop(0)
      found = [c for c in code.co_consts if isinstance(c, types.CodeType)
               and c.co_name == name
               and (parts or c.co_firstlineno == record["line"])]
      if len(found) != 1:
        return None
      code = found[0]
      obj = None
      continue
    if obj is None:
      return None
    obj = vars(obj).get(part) if isinstance(obj, type) else getattr(
        obj, part, None)
    obj = getattr(obj, "__func__", obj)           # staticmethod, classmethod
    obj = getattr(obj, "fget", obj)               # property
    obj = getattr(obj, "python_function", obj)    # tf.function
    while hasattr(obj, "__wrapped__"):            # functools.wraps
      obj = obj.__wrapped__
    code = getattr(obj, "__code__", None)
    if code is None and parts[:1] == ["<locals>"]:
      return None
  if code is None or code.co_firstlineno != record["line"]:
    return None
  if obj is not None and getattr(obj, "__code__", None) is code:
    return obj
  cells = tuple(types.CellType(None) for _ in code.co_freevars)
  return types.FunctionType(code, module.__dict__, code.co_name, None,
                            cells or None)


def _fresh_streams():
  """sys.stdin/stdout/stderr on descriptors 0/1/2 as a new interpreter
  makes them (block-buffered unless a terminal or PYTHONUNBUFFERED)."""
  import io  # pylint: disable=g-import-not-at-top
  unbuffered = bool(os.environ.get("PYTHONUNBUFFERED"))
  encoding = os.environ.get("PYTHONIOENCODING", "utf-8").split(":")[0] or "utf-8"

  def stream(fd, mode, errors, line_buffering):
    raw = io.FileIO(fd, mode, closefd=False)
    if mode == "rb":
      return io.TextIOWrapper(io.BufferedReader(raw), encoding, errors)
    return io.TextIOWrapper(io.BufferedWriter(raw), encoding, errors,
                            line_buffering=line_buffering,
                            write_through=unbuffered)

  sys.stdin = sys.__stdin__ = stream(0, "rb", "strict", False)
  sys.stdout = sys.__stdout__ = stream(1, "wb", "strict",
                                       os.isatty(1) or unbuffered)
  sys.stderr = sys.__stderr__ = stream(2, "wb", "backslashreplace", True)


if __name__ == "__main__":
  _serve(sys.argv[1])
