"""TensorFlow Datasets builder `tiny_imagenet` for the TinyImageNet-200 release.

Importing `part_tf.data` registers the builder, so `tfds.load("tiny_imagenet")`
and `part_tf.data.load("tiny_imagenet", ...)` find it. It reads the official
release (`tiny-imagenet-200.zip`, whose top folder is `tiny-imagenet-200/`):

  tiny-imagenet-200/wnids.txt                       the 200 class wnids
  tiny-imagenet-200/words.txt                       wnid<TAB>words (more wnids)
  tiny-imagenet-200/train/<wnid>/images/<wnid>_<i>.JPEG
  tiny-imagenet-200/train/<wnid>/<wnid>_boxes.txt   (boxes: not used)
  tiny-imagenet-200/val/images/val_<i>.JPEG
  tiny-imagenet-200/val/val_annotations.txt         name<TAB>wnid<TAB>4 box ints
  tiny-imagenet-200/test/images/test_<i>.JPEG       (no labels)

Configs:
  `tiny_imagenet` (= `tiny_imagenet/default`): splits `train` and `validation`
    with features `image` (64x64x3 uint8), `label` (ClassLabel named by the
    wnids in `wnids.txt` order) and `file_name` (the JPEG's base name).
  `tiny_imagenet/test_images`: the unlabelled split `test`, features `image`
    and `file_name` only, so it cannot be taken for labelled data.
  The wnid -> words descriptions of `words.txt` are kept in the dataset's
  metadata (`metadata.json`); read them with `class_descriptions(info)`.

Where the data comes from, first match wins:
  1. `DownloadConfig(manual_dir=M)` given (the `--manual_dir` flag):
     `M/tiny-imagenet-200.zip`, else an extracted `M/tiny-imagenet-200/`
     folder, else `M` itself if it is that folder (holds `wnids.txt`); `M`
     may also be the path of the zip file. Anything else is an error saying
     what was expected where; nothing is downloaded.
  2. Otherwise the default manual dir `<data_dir>/downloads/manual/`, same
     rules, if it exists and is not empty.
  3. Otherwise the official zip is downloaded (needs internet).
  Zips are extracted here with `zipfile` after checking that no member path
  leaves the target folder, into a temporary folder under the download
  manager's extract dir that is deleted when preparation ends.

Every image is decoded once while preparing: a file that is not a readable
64x64 JPEG, a class folder not in `wnids.txt`, a missing or inconsistent
`val_annotations.txt` all stop preparation with an error naming the file
(nothing is skipped). TFDS writes into a temporary folder and renames it only
on success, so a failed preparation leaves no dataset that looks complete.

Prepare from the zip in ~/Downloads and train:
  python scripts/train.py --dataset=tiny_imagenet \
      --data_dir=~/tensorflow_datasets --manual_dir=~/Downloads \
      --model_dir=runs/tiny_part
or only prepare:
  python -c "import part_tf.data, tensorflow_datasets as tfds; \
tfds.builder('tiny_imagenet', data_dir='$HOME/tensorflow_datasets')\
.download_and_prepare(download_config=tfds.download.DownloadConfig(\
manual_dir='$HOME/Downloads'))"
"""

import contextlib
import io
import os
import pathlib
import re
import shutil
import stat
import tempfile
import zipfile

from PIL import Image
import tensorflow_datasets as tfds

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ZIP_NAME = "tiny-imagenet-200.zip"
FOLDER_NAME = "tiny-imagenet-200"
IMAGE_SIZE = 64

_DESCRIPTIONS_KEY = "class_descriptions"


class TinyImagenetConfig(tfds.core.BuilderConfig):
  """A `tiny_imagenet` config.

  Attributes:
    labelled: True for train + validation with labels; False for the
      unlabelled `test` split, whose features have no `label`.
  """

  def __init__(self, *, labelled: bool, **kwargs):
    super().__init__(**kwargs)
    self.labelled = labelled


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """TinyImageNet-200: 64x64 RGB images of 200 ImageNet classes."""

  name = "tiny_imagenet"
  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "First release."}
  BUILDER_CONFIGS = [
      TinyImagenetConfig(
          name="default", labelled=True,
          description="Labelled splits train and validation."),
      TinyImagenetConfig(
          name="test_images", labelled=False,
          description="The unlabelled test split (no `label` feature)."),
  ]
  DEFAULT_BUILDER_CONFIG_NAME = "default"
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Put {ZIP_NAME} (from {URL}) or the folder {FOLDER_NAME}/ extracted "
      "from it in the manual dir (--manual_dir).")

  def _info(self) -> tfds.core.DatasetInfo:
    features = {
        "image": tfds.features.Image(
            shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"),
        "file_name": tfds.features.Text(),
    }
    if self.builder_config.labelled:
      # Names are set from wnids.txt when preparing; no count is hard-coded.
      features["label"] = tfds.features.ClassLabel()
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict(features),
        supervised_keys=("image", "label") if self.builder_config.labelled
        else None,
        homepage="http://cs231n.stanford.edu/",
        metadata=tfds.core.MetadataDict(),
    )

  def _download_and_prepare(self, dl_manager, download_config):
    """Keeps the extracted files (if any) for the whole preparation."""
    self._given_manual_dir = download_config.manual_dir
    with contextlib.ExitStack() as stack:
      self._cleanup = stack
      try:
        return super()._download_and_prepare(dl_manager, download_config)
      finally:
        del self._cleanup

  def _split_generators(self, dl_manager):
    root = self._find_root(dl_manager)
    wnids = read_wnids(root)
    self.info.metadata[_DESCRIPTIONS_KEY] = read_descriptions(root, wnids)
    if not self.builder_config.labelled:
      return {"test": self._generate_unlabelled(root / "test" / "images")}
    self.info.features["label"].names = wnids
    train = list_train(root, wnids)
    validation = list_validation(root, set(wnids))
    return {"train": self._generate_labelled(train),
            "validation": self._generate_labelled(validation)}

  def _generate_examples(self):  # Not used: the split generators are given.
    raise NotImplementedError

  def _generate_labelled(self, items):
    for path, wnid in items:
      yield path.name, {"image": read_image(path), "label": wnid,
                        "file_name": path.name}

  def _generate_unlabelled(self, folder: pathlib.Path):
    for path in list_images(folder):
      yield path.name, {"image": read_image(path), "file_name": path.name}

  def _find_root(self, dl_manager) -> pathlib.Path:
    """Returns the `tiny-imagenet-200/` folder, extracting a zip if needed."""
    given = self._given_manual_dir
    if given is not None:
      return self._root_in(pathlib.Path(os.path.expanduser(os.fspath(given))),
                           dl_manager)
    try:
      default_manual = pathlib.Path(os.fspath(dl_manager.manual_dir))
    except AssertionError:  # the default manual dir is absent or empty
      default_manual = None
    if default_manual is not None:
      return self._root_in(default_manual, dl_manager)
    zip_path = pathlib.Path(os.fspath(dl_manager.download(URL)))
    return self._extract(zip_path, dl_manager)

  def _root_in(self, manual: pathlib.Path, dl_manager) -> pathlib.Path:
    """The data found in a manual dir (see the module docstring)."""
    if manual.is_file() and manual.suffix == ".zip":
      return self._extract(manual, dl_manager)
    if (manual / ZIP_NAME).is_file():
      return self._extract(manual / ZIP_NAME, dl_manager)
    if (manual / FOLDER_NAME / "wnids.txt").is_file():
      return manual / FOLDER_NAME
    if (manual / "wnids.txt").is_file():
      return manual
    raise FileNotFoundError(
        f"tiny_imagenet: expected {ZIP_NAME} or an extracted {FOLDER_NAME}/ "
        f"folder (with wnids.txt) in the manual dir {manual}, found neither.")

  def _extract(self, zip_path: pathlib.Path, dl_manager) -> pathlib.Path:
    """Safely extracts `zip_path` into a temporary folder; returns its root."""
    extract_dir = pathlib.Path(os.fspath(dl_manager._extract_dir))  # pylint: disable=protected-access
    extract_dir.mkdir(parents=True, exist_ok=True)
    target = pathlib.Path(tempfile.mkdtemp(prefix="tiny_imagenet_",
                                           dir=extract_dir))
    self._cleanup.callback(shutil.rmtree, target, ignore_errors=True)
    safe_extract(zip_path, target)
    root = target / FOLDER_NAME
    if not (root / "wnids.txt").is_file():
      raise FileNotFoundError(
          f"tiny_imagenet: {zip_path} has no {FOLDER_NAME}/wnids.txt; "
          f"expected the official {ZIP_NAME}.")
    return root


def class_descriptions(builder_or_info) -> dict[str, str]:
  """Returns wnid -> words (from words.txt) of the prepared dataset's classes.

  Args:
    builder_or_info: A `tiny_imagenet` builder or its `tfds.core.DatasetInfo`
      (e.g. from `tfds.load(..., with_info=True)`), of a prepared dataset.

  Raises:
    ValueError: The metadata holds no descriptions (not prepared).
  """
  info = getattr(builder_or_info, "info", builder_or_info)
  descriptions = (info.metadata or {}).get(_DESCRIPTIONS_KEY)
  if descriptions is None:
    raise ValueError("tiny_imagenet: no class descriptions in the metadata; "
                     "is the dataset prepared?")
  return dict(descriptions)


# Limits on what an archive may extract to. The official zip holds 120,206
# files (about 250 MB once extracted); the limits leave room for that many
# times over while stopping a zip bomb before it fills the disk.
MAX_MEMBERS = 250_000
MAX_TOTAL_BYTES = 2 * 1024**3
MAX_MEMBER_BYTES = 64 * 1024**2
# JPEGs hardly compress and text compresses about 5x: a member that inflates
# more than this (and is larger than 1 MiB) is a bomb, not data.
MAX_RATIO = 100


def safe_extract(zip_path: pathlib.Path, target: pathlib.Path) -> None:
  """Extracts a zip after checking every member, before writing anything.

  Raises:
    ValueError: the file is not a zip archive; a member is absolute, leaves
      `target` (`..`), is a symlink or appears twice; or the archive would
      extract to more than `MAX_TOTAL_BYTES`, `MAX_MEMBERS` files, a member
      larger than `MAX_MEMBER_BYTES` or compressed more than `MAX_RATIO`
      times, or more than the free disk space. Then nothing is extracted.
  """
  target = target.resolve()
  try:
    archive = zipfile.ZipFile(zip_path)
  except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
    raise ValueError(f"tiny_imagenet: {zip_path} is not a readable zip "
                     f"archive ({e}); download {ZIP_NAME} again.") from None
  with archive:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
      raise ValueError(f"tiny_imagenet: {zip_path} has {len(members)} "
                       f"members, more than {MAX_MEMBERS}; nothing "
                       "extracted.")
    seen = set()
    total = 0
    for member in members:
      name = member.filename
      dest = (target / name).resolve()
      mode = member.external_attr >> 16
      if (name.startswith(("/", "\\")) or os.path.isabs(name) or
          ".." in pathlib.PurePosixPath(name.replace("\\", "/")).parts or
          (dest != target and target not in dest.parents)):
        raise ValueError(f"tiny_imagenet: unsafe member path {name!r} in "
                         f"{zip_path} (leaves the extraction folder); "
                         "nothing extracted.")
      if stat.S_ISLNK(mode):
        raise ValueError(f"tiny_imagenet: symlink member {name!r} in "
                         f"{zip_path}; nothing extracted.")
      if dest in seen:
        raise ValueError(f"tiny_imagenet: member {name!r} appears twice in "
                         f"{zip_path}; nothing extracted.")
      seen.add(dest)
      size = member.file_size
      if size > MAX_MEMBER_BYTES or (
          size > 1024**2 and size > MAX_RATIO * max(member.compress_size, 1)):
        raise ValueError(
            f"tiny_imagenet: member {name!r} of {zip_path} would extract to "
            f"{size} bytes from {member.compress_size} (a zip bomb?); "
            "nothing extracted.")
      total += size
    if total > MAX_TOTAL_BYTES:
      raise ValueError(f"tiny_imagenet: {zip_path} would extract to {total} "
                       f"bytes, more than {MAX_TOTAL_BYTES}; nothing "
                       "extracted.")
    free = shutil.disk_usage(target).free
    if total > free:
      raise ValueError(f"tiny_imagenet: extracting {zip_path} needs {total} "
                       f"bytes in {target}, which has {free} free.")
    # zipfile stops each member at its declared size and checks its CRC, so
    # the sizes checked above bound what is written.
    archive.extractall(target, members)


_WNID = re.compile(r"^[A-Za-z0-9_-]+$")


def read_wnids(root: pathlib.Path) -> list[str]:
  """The class wnids of `root/wnids.txt`, in file order (no duplicates)."""
  path = root / "wnids.txt"
  if not path.is_file():
    raise FileNotFoundError(f"tiny_imagenet: missing {path}.")
  wnids = [line.strip() for line in path.read_text().splitlines()
           if line.strip()]
  if not wnids or len(set(wnids)) != len(wnids):
    raise ValueError(f"tiny_imagenet: {path} is empty or repeats a wnid.")
  for wnid in wnids:
    if not _WNID.match(wnid):  # a wnid names a folder: no `..` or `/`
      raise ValueError(f"tiny_imagenet: {path} holds {wnid!r}, which is not "
                       "a wnid (letters, digits, '_' and '-' only).")
  return wnids


def read_descriptions(root: pathlib.Path, wnids: list[str]) -> dict[str, str]:
  """wnid -> words of `root/words.txt` for each wnid of `wnids`."""
  path = root / "words.txt"
  if not path.is_file():
    raise FileNotFoundError(f"tiny_imagenet: missing {path}.")
  words = {}
  for line in path.read_text().splitlines():
    if line.strip():
      wnid, _, text = line.partition("\t")
      words[wnid.strip()] = text.strip()
  missing = [w for w in wnids if w not in words]
  if missing:
    raise ValueError(f"tiny_imagenet: {path} has no words for "
                     f"{', '.join(missing[:5])}.")
  return {w: words[w] for w in wnids}


def list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  """The sorted `*.JPEG` files of `folder`; any other entry is an error."""
  if not folder.is_dir():
    raise FileNotFoundError(f"tiny_imagenet: missing folder {folder}.")
  paths = sorted(folder.iterdir())
  for path in paths:
    if path.suffix != ".JPEG" or not path.is_file():
      raise ValueError(f"tiny_imagenet: unexpected entry {path} (only "
                       "*.JPEG files belong there).")
  return paths


def list_train(root: pathlib.Path, wnids: list[str]
               ) -> list[tuple[pathlib.Path, str]]:
  """(path, wnid) of every training image, classes in `wnids` order."""
  train = root / "train"
  if not train.is_dir():
    raise FileNotFoundError(f"tiny_imagenet: missing folder {train}.")
  known = set(wnids)
  for entry in sorted(train.iterdir()):
    if entry.name not in known:
      raise ValueError(f"tiny_imagenet: class folder {entry} is not in "
                       f"{root / 'wnids.txt'}.")
  items = []
  for wnid in wnids:
    paths = list_images(train / wnid / "images")
    if not paths:
      raise ValueError(f"tiny_imagenet: {train / wnid / 'images'} is empty.")
    items.extend((path, wnid) for path in paths)
  return items


def list_validation(root: pathlib.Path, wnids: set[str]
                    ) -> list[tuple[pathlib.Path, str]]:
  """(path, wnid) of every validation image, labels from the annotations."""
  annotations = root / "val" / "val_annotations.txt"
  if not annotations.is_file():
    raise FileNotFoundError(f"tiny_imagenet: missing {annotations}.")
  label_of = {}
  for number, line in enumerate(annotations.read_text().splitlines(), 1):
    if not line.strip():
      continue
    fields = line.rstrip("\r\n").split("\t")
    where = f"{annotations} line {number}"
    if len(fields) != 6:
      raise ValueError(f"tiny_imagenet: {where}: expected 6 tab-separated "
                       f"fields, found {len(fields)}.")
    name, wnid = fields[0], fields[1]
    if wnid not in wnids:
      raise ValueError(f"tiny_imagenet: {where}: wnid {wnid!r} is not in "
                       "wnids.txt.")
    if name in label_of:
      raise ValueError(f"tiny_imagenet: {where}: {name} annotated twice.")
    label_of[name] = wnid
  paths = list_images(root / "val" / "images")
  for path in paths:
    if path.name not in label_of:
      raise ValueError(f"tiny_imagenet: {path} has no line in {annotations}.")
  unused = sorted(set(label_of) - {p.name for p in paths})
  if unused:
    raise ValueError(f"tiny_imagenet: {annotations} annotates missing "
                     f"images, e.g. {unused[0]}.")
  return [(path, label_of[path.name]) for path in paths]


def read_image(path: pathlib.Path) -> bytes:
  """The JPEG bytes of `path`, after checking it decodes to 64x64 pixels.

  Grayscale JPEGs (the release has some) are kept; TFDS decodes them to 3
  equal channels.

  Raises:
    ValueError: Not a complete, decodable JPEG of 64x64 RGB or grayscale.
  """
  encoded = path.read_bytes()
  try:
    with Image.open(io.BytesIO(encoded)) as image:
      image.load()
      fmt, size, mode = image.format, image.size, image.mode
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise ValueError(f"tiny_imagenet: corrupt or truncated image {path} "
                     f"({type(e).__name__}: {e}).") from e
  if fmt != "JPEG" or mode not in ("RGB", "L"):
    raise ValueError(f"tiny_imagenet: {path} is {fmt} {mode}, expected an "
                     "RGB or grayscale JPEG.")
  if size != (IMAGE_SIZE, IMAGE_SIZE):
    raise ValueError(f"tiny_imagenet: {path} is {size[0]}x{size[1]}, "
                     f"expected {IMAGE_SIZE}x{IMAGE_SIZE}.")
  return encoded
