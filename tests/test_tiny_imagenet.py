"""Tests of the `tiny_imagenet` TFDS builder on a miniature official release.

The release is written in the official layout (3 classes, 4 training JPEGs
each, 6 validation JPEGs, 2 test JPEGs, words.txt with unrelated extra wnids),
then prepared from the zip in a manual dir and from the extracted folder.
Expected pixels come from decoding each JPEG file independently with
`tf.io.decode_jpeg`.
"""

import io
import os
import pathlib
import shutil
import tempfile
from unittest import mock
import zipfile

import numpy as np
from PIL import Image
import tensorflow as tf
import tensorflow_datasets as tfds

from part_tf import data
from part_tf.data import tiny_imagenet

WNIDS = ["n02124075", "n04067472", "n01443537"]  # not sorted on purpose
EXTRA_WORDS = {"n00001740": "entity", "n99999999": "nothing at all"}
WORDS = {"n02124075": "Egyptian cat", "n04067472": "reel",
         "n01443537": "goldfish, Carassius auratus"}
TRAIN_PER_CLASS = 4
NUM_VAL = 6
NUM_TEST = 2
# Validation labels: every class appears, not in wnids order.
VAL_WNIDS = ["n01443537", "n02124075", "n04067472", "n04067472", "n02124075",
             "n01443537"]


def _jpeg(rng, size=64, gray=False) -> bytes:
  shape = (size, size) if gray else (size, size, 3)
  pixels = rng.integers(0, 256, size=shape, dtype=np.uint8)
  buffer = io.BytesIO()
  Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
  return buffer.getvalue()


def _decode(encoded: bytes) -> np.ndarray:
  return tf.io.decode_jpeg(encoded, channels=3).numpy()


def prepared_miniature(test_case):
  """(data_dir, (train, test, spec)) of the miniature release, prepared in
  a temporary folder that `test_case` removes when it ends."""
  root = pathlib.Path(tempfile.mkdtemp())
  test_case.addCleanup(shutil.rmtree, root)
  make_release(root / "manual")
  data_dir = str(root / "data")
  return data_dir, data.load("tiny_imagenet", data_dir=data_dir,
                             manual_dir=str(root / "manual"))


def make_release(parent: pathlib.Path, seed: int = 0) -> dict:
  """Writes `parent/tiny-imagenet-200/`; returns {split: {name: (wnid, jpeg)}}.

  The test split maps names to (None, jpeg). One training image is grayscale,
  as in the real release.
  """
  rng = np.random.default_rng(seed)
  root = parent / "tiny-imagenet-200"
  root.mkdir(parents=True)
  (root / "wnids.txt").write_text("".join(f"{w}\n" for w in WNIDS))
  words = {**EXTRA_WORDS, **WORDS}
  (root / "words.txt").write_text(
      "".join(f"{w}\t{t}\n" for w, t in sorted(words.items())))
  expected = {"train": {}, "validation": {}, "test": {}}
  for wnid in WNIDS:
    images = root / "train" / wnid / "images"
    images.mkdir(parents=True)
    boxes = []
    for i in range(TRAIN_PER_CLASS):
      name = f"{wnid}_{i}.JPEG"
      encoded = _jpeg(rng, gray=(wnid == WNIDS[1] and i == 2))
      (images / name).write_bytes(encoded)
      expected["train"][name] = (wnid, encoded)
      boxes.append(f"{name}\t1\t2\t60\t61\n")
    (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("".join(boxes))
  (root / "val" / "images").mkdir(parents=True)
  lines = []
  for i, wnid in enumerate(VAL_WNIDS):
    name = f"val_{i}.JPEG"
    encoded = _jpeg(rng)
    (root / "val" / "images" / name).write_bytes(encoded)
    expected["validation"][name] = (wnid, encoded)
    lines.append(f"{name}\t{wnid}\t{i}\t3\t50\t63\n")
  (root / "val" / "val_annotations.txt").write_text("".join(lines))
  (root / "test" / "images").mkdir(parents=True)
  for i in range(NUM_TEST):
    name = f"test_{i}.JPEG"
    encoded = _jpeg(rng)
    (root / "test" / "images" / name).write_bytes(encoded)
    expected["test"][name] = (None, encoded)
  return expected


def make_zip(parent: pathlib.Path, zip_path: pathlib.Path) -> None:
  """Zips `parent/tiny-imagenet-200/` like the official archive."""
  with zipfile.ZipFile(zip_path, "w") as archive:
    for path in sorted((parent / "tiny-imagenet-200").rglob("*")):
      archive.write(path, path.relative_to(parent).as_posix())


def _download_config(manual_dir) -> tfds.download.DownloadConfig:
  return tfds.download.DownloadConfig(manual_dir=os.fspath(manual_dir))


def _prepare(data_dir, manual_dir, config="default"):
  builder = tfds.builder(f"tiny_imagenet/{config}", data_dir=os.fspath(data_dir))
  builder.download_and_prepare(download_config=_download_config(manual_dir))
  return builder


def _examples(builder, split):
  return list(tfds.as_numpy(builder.as_dataset(split=split)))


class TinyImagenetTest(tf.test.TestCase):
  """Prepared once from the zip and once from the folder, then inspected."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = pathlib.Path(tempfile.mkdtemp())
    cls.source = cls.tmp / "source"
    cls.expected = make_release(cls.source)
    cls.zip_manual = cls.tmp / "downloads"
    cls.zip_manual.mkdir()
    make_zip(cls.source, cls.zip_manual / "tiny-imagenet-200.zip")
    # Zip in the manual dir, through tfds.load.
    cls.zip_data_dir = cls.tmp / "from_zip"
    cls.zip_splits, cls.zip_info = tfds.load(
        "tiny_imagenet", split=["train", "validation"],
        data_dir=os.fspath(cls.zip_data_dir), with_info=True,
        download_and_prepare_kwargs={
            "download_config": _download_config(cls.zip_manual)})
    # Extracted folder in the manual dir (source/ holds tiny-imagenet-200/).
    cls.folder_data_dir = cls.tmp / "from_folder"
    cls.folder_builder = _prepare(cls.folder_data_dir, cls.source)

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _check_split(self, examples, split):
    expected = self.expected[split]
    self.assertLen(examples, len(expected))
    self.assertCountEqual([e["file_name"].decode() for e in examples],
                          expected)
    for example in examples:
      wnid, encoded = expected[example["file_name"].decode()]
      self.assertEqual(example["image"].dtype, np.uint8)
      self.assertAllEqual(example["image"], _decode(encoded))
      self.assertEqual(example["label"], WNIDS.index(wnid))

  def test_split_sizes_and_class_names(self):
    for info in (self.zip_info, self.folder_builder.info):
      self.assertEqual(info.splits["train"].num_examples,
                       len(WNIDS) * TRAIN_PER_CLASS)
      self.assertEqual(info.splits["validation"].num_examples, NUM_VAL)
      self.assertNotIn("test", info.splits)
      self.assertEqual(info.features["label"].names, WNIDS)
      self.assertEqual(info.features["image"].shape, (64, 64, 3))
      self.assertEqual(info.supervised_keys, ("image", "label"))

  def test_zip_examples_labels_and_pixels(self):
    train, validation = self.zip_splits
    self._check_split(list(tfds.as_numpy(train)), "train")
    self._check_split(list(tfds.as_numpy(validation)), "validation")

  def test_folder_examples_labels_and_pixels(self):
    for split in ("train", "validation"):
      self._check_split(_examples(self.folder_builder, split), split)

  def test_validation_label_matches_its_annotation_line(self):
    annotations = (self.source / "tiny-imagenet-200" / "val" /
                   "val_annotations.txt").read_text().splitlines()
    name, wnid = annotations[3].split("\t")[:2]
    by_name = {e["file_name"].decode(): e
               for e in _examples(self.folder_builder, "validation")}
    self.assertEqual(by_name[name]["label"], WNIDS.index(wnid))
    self.assertEqual(
        self.folder_builder.info.features["label"].int2str(
            by_name[name]["label"]), wnid)

  def test_grayscale_jpeg_becomes_three_equal_channels(self):
    name = f"{WNIDS[1]}_2.JPEG"
    image, = [e["image"] for e in _examples(self.folder_builder, "train")
              if e["file_name"].decode() == name]
    self.assertAllEqual(image[..., 0], image[..., 1])
    self.assertAllEqual(image[..., 0], image[..., 2])

  def test_class_descriptions_from_words_txt(self):
    # Restored from metadata.json by a fresh builder on the prepared dir.
    fresh = tfds.builder("tiny_imagenet", data_dir=os.fspath(self.zip_data_dir))
    for source in (self.zip_info, fresh, fresh.info):
      self.assertEqual(tiny_imagenet.class_descriptions(source), WORDS)
    self.assertEqual(list(tiny_imagenet.class_descriptions(fresh)), WNIDS)

  def test_extracted_files_are_removed(self):
    extracted = self.zip_data_dir / "downloads" / "extracted"
    self.assertEqual(list(extracted.glob("tiny_imagenet_*")), [])

  def test_manual_dir_may_be_the_folder_itself_or_the_zip(self):
    for manual in (self.source / "tiny-imagenet-200",
                   self.zip_manual / "tiny-imagenet-200.zip"):
      with tempfile.TemporaryDirectory() as data_dir:
        builder = _prepare(data_dir, manual)
        self._check_split(_examples(builder, "validation"), "validation")

  def test_default_manual_dir_and_download_paths(self):
    # No manual_dir given: <data_dir>/downloads/manual is used if not empty.
    with tempfile.TemporaryDirectory() as data_dir:
      default_manual = pathlib.Path(data_dir) / "downloads" / "manual"
      default_manual.mkdir(parents=True)
      shutil.copy(self.zip_manual / "tiny-imagenet-200.zip", default_manual)
      builder = tfds.builder("tiny_imagenet", data_dir=data_dir)
      builder.download_and_prepare()
      self._check_split(_examples(builder, "validation"), "validation")
    # Else the official zip is downloaded (faked: no internet here).
    zip_path = self.zip_manual / "tiny-imagenet-200.zip"
    with tempfile.TemporaryDirectory() as data_dir, mock.patch.object(
        tfds.download.DownloadManager, "download",
        return_value=zip_path) as download:
      builder = tfds.builder("tiny_imagenet", data_dir=data_dir)
      builder.download_and_prepare()
      download.assert_called_once_with(tiny_imagenet.URL)
      self._check_split(_examples(builder, "train"), "train")

  def test_test_images_config_has_no_labels(self):
    with tempfile.TemporaryDirectory() as data_dir:
      builder = _prepare(data_dir, self.zip_manual, config="test_images")
      self.assertEqual(list(builder.info.splits), ["test"])
      self.assertEqual(builder.info.splits["test"].num_examples, NUM_TEST)
      self.assertNotIn("label", builder.info.features)
      self.assertIsNone(builder.info.supervised_keys)
      examples = _examples(builder, "test")
      self.assertLen(examples, NUM_TEST)
      for example in examples:
        self.assertEqual(set(example), {"image", "file_name"})
        _, encoded = self.expected["test"][example["file_name"].decode()]
        self.assertAllEqual(example["image"], _decode(encoded))
      with self.assertRaises(ValueError):  # no supervised view
        tfds.load("tiny_imagenet/test_images", split="test", data_dir=data_dir,
                  download=False, as_supervised=True)
    with self.assertRaisesRegex(ValueError, "test"):  # not in the default
      self.folder_builder.as_dataset(split="test")

  def test_part_tf_data_load_round_trip(self):
    with tempfile.TemporaryDirectory() as data_dir:
      train, test, spec = data.load("tiny_imagenet", data_dir=data_dir,
                                    manual_dir=os.fspath(self.zip_manual))
      again, _, _ = data.load("tiny_imagenet", data_dir=data_dir,
                              download=False, max_train=5)
    self.assertEqual(spec.test_split, "validation")
    self.assertEqual(train.images.shape, (len(WNIDS) * TRAIN_PER_CLASS,
                                          64, 64, 3))
    self.assertEqual(test.images.shape, (NUM_VAL, 64, 64, 3))
    for split, arrays in (("train", train), ("validation", test)):
      expected = {_decode(enc).tobytes(): WNIDS.index(w)
                  for w, enc in self.expected[split].values()}
      self.assertLen(expected, len(arrays.labels))
      for image, label in zip(arrays.images, arrays.labels):
        self.assertEqual(expected[image.tobytes()], label)
    self.assertAllEqual(again.images, train.images[:5])


def _corrupt(root):
  path = root / "train" / WNIDS[0] / "images" / f"{WNIDS[0]}_1.JPEG"
  path.write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg" * 20)
  return path, ValueError


def _truncated(root):  # in validation: train is written before it fails
  path = root / "val" / "images" / "val_4.JPEG"
  path.write_bytes(path.read_bytes()[:400])
  return path, ValueError


def _no_annotations(root):
  path = root / "val" / "val_annotations.txt"
  path.unlink()
  return path, FileNotFoundError


def _unknown_class(root):
  path = root / "train" / "n09999999"
  shutil.copytree(root / "train" / WNIDS[0], path)
  return path, ValueError


def _wrong_size(root):
  path = root / "train" / WNIDS[2] / "images" / f"{WNIDS[2]}_3.JPEG"
  path.write_bytes(_jpeg(np.random.default_rng(1), size=32))
  return path, ValueError


def _unannotated_val_image(root):
  path = root / "val" / "images" / "val_99.JPEG"
  path.write_bytes(_jpeg(np.random.default_rng(2)))
  return path, ValueError


class BadDataTest(tf.test.TestCase):
  """Every defect stops preparation with an error naming the culprit."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    cls.tmp = pathlib.Path(tempfile.mkdtemp())
    make_release(cls.tmp / "good")

  @classmethod
  def tearDownClass(cls):
    shutil.rmtree(cls.tmp, ignore_errors=True)
    super().tearDownClass()

  def _release_with(self, defect):
    parent = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
    shutil.copytree(self.tmp / "good" / "tiny-imagenet-200",
                    parent / "tiny-imagenet-200")
    path, error = defect(parent / "tiny-imagenet-200")
    return parent, path, error

  def _assert_not_prepared(self, data_dir):
    self.assertFalse((data_dir / "tiny_imagenet" / "default" / "1.0.0")
                     .exists())
    with self.assertRaises(AssertionError):  # TFDS: "not prepared"
      tfds.load("tiny_imagenet", split="train", data_dir=os.fspath(data_dir),
                download=False)
    with self.assertRaisesRegex(FileNotFoundError, "--manual_dir"):
      data.load("tiny_imagenet", data_dir=os.fspath(data_dir), download=False)

  def test_each_defect_is_an_error_naming_the_file(self):
    for defect in (_corrupt, _truncated, _no_annotations, _unknown_class,
                   _wrong_size, _unannotated_val_image):
      with self.subTest(defect.__name__):
        manual, path, error = self._release_with(defect)
        data_dir = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
        with self.assertRaises(error) as ctx:
          _prepare(data_dir, manual)
        self.assertIn(os.fspath(path), str(ctx.exception))
        self._assert_not_prepared(data_dir)

  def test_defect_in_zip_through_data_load(self):
    manual, path, _ = self._release_with(_truncated)
    make_zip(manual, manual / "tiny-imagenet-200.zip")
    shutil.rmtree(manual / "tiny-imagenet-200")  # the zip is the only source
    data_dir = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
    with self.assertRaisesRegex(ValueError,
                                r"corrupt or truncated image .*val_4\.JPEG"):
      data.load("tiny_imagenet", data_dir=os.fspath(data_dir),
                manual_dir=os.fspath(manual))
    self._assert_not_prepared(data_dir)
    self.assertEqual(
        list((data_dir / "downloads" / "extracted").glob("tiny_imagenet_*")),
        [])

  def test_zip_member_escaping_the_folder(self):
    for evil in ("../evil.txt", "tiny-imagenet-200/../../evil.txt",
                 os.fspath(self.tmp / "abs_evil.txt")):
      with self.subTest(evil):
        manual = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
        make_zip(self.tmp / "good", manual / "tiny-imagenet-200.zip")
        with zipfile.ZipFile(manual / "tiny-imagenet-200.zip", "a") as archive:
          archive.writestr(zipfile.ZipInfo(evil), b"evil")
        data_dir = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
        with self.assertRaisesRegex(ValueError, "unsafe member path"):
          _prepare(data_dir, manual)
        self.assertEqual([p for p in self.tmp.rglob("*evil.txt")], [])
        self.assertEqual(list((data_dir / "downloads" / "extracted")
                              .glob("tiny_imagenet_*")), [])
        self._assert_not_prepared(data_dir)

  def test_wrong_manual_dir_is_a_one_line_error(self):
    empty = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
    unrelated = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
    (unrelated / "cifar-10-python.tar.gz").write_bytes(b"x")
    for manual in (empty, unrelated, self.tmp / "does_not_exist"):
      with self.subTest(os.fspath(manual)):
        data_dir = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
        with self.assertRaises(FileNotFoundError) as ctx:
          data.load("tiny_imagenet", data_dir=os.fspath(data_dir),
                    manual_dir=os.fspath(manual))
        message = str(ctx.exception)
        self.assertNotIn("\n", message)
        self.assertIn(f"tiny-imagenet-200.zip or an extracted "
                      f"tiny-imagenet-200/ folder (with wnids.txt) in the "
                      f"manual dir {manual}", message)
        self._assert_not_prepared(data_dir)

  def test_not_prepared_without_download_is_a_one_line_error(self):
    data_dir = pathlib.Path(tempfile.mkdtemp(dir=self.tmp))
    with self.assertRaises(FileNotFoundError) as ctx:
      data.load("tiny_imagenet", data_dir=os.fspath(data_dir), download=False)
    message = str(ctx.exception)
    self.assertNotIn("\n", message)
    self.assertIn(os.fspath(data_dir), message)
    self.assertIn("tiny-imagenet-200.zip", message)
    self.assertIn("--manual_dir=DIR", message)

  def test_safe_extract_writes_nothing_when_a_member_is_unsafe(self):
    zip_path = self.tmp / "mixed.zip"
    with zipfile.ZipFile(zip_path, "w") as archive:
      archive.writestr("ok/a.txt", b"a")
      archive.writestr("ok/../../b.txt", b"b")
    target = self.tmp / "target"
    target.mkdir()
    with self.assertRaisesRegex(ValueError, r"ok/\.\./\.\./b\.txt"):
      tiny_imagenet.safe_extract(zip_path, target)
    self.assertEqual(list(target.iterdir()), [])
    self.assertFalse((self.tmp / "b.txt").exists())


if __name__ == "__main__":
  tf.test.main()
