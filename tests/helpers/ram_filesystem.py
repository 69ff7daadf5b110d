"""A non-local Beam FileSystem for tests: `ram://`, an in-memory object store.

It stores through TensorFlow's own `ram://` filesystem, so Beam (via this class) and TensorFlow
(tf.data, tf.io.gfile, tensorflow-transform) see the same objects — just as both see `gs://`
on Dataflow. Object-store semantics like GCS: no directories (`has_dirs` is False, `mkdirs` does
nothing, listing is by prefix). Defining the class registers the scheme with Beam (Beam finds
FileSystem subclasses by their `scheme()`); the store lives in this process only.
"""

from __future__ import annotations

import io
import posixpath

import tensorflow as tf
from apache_beam.io.filesystem import (
    BeamIOError,
    CompressedFile,
    CompressionTypes,
    FileMetadata,
    FileSystem,
)

SCHEME = "ram"


class _Download(io.BytesIO):
    def __init__(self, path: str):
        with tf.io.gfile.GFile(path, "rb") as f:
            super().__init__(f.read())
        self.mode = "rb"  # type: ignore[misc]  # CompressedFile checks it


class _Upload(io.BytesIO):
    """Like an object-store upload: buffered, and the object appears whole on close."""

    def __init__(self, path: str):
        super().__init__()
        self._path = path
        self.mode = "wb"  # type: ignore[misc]  # CompressedFile checks it

    def close(self) -> None:
        if not self.closed:
            with tf.io.gfile.GFile(self._path, "wb") as f:
                f.write(self.getvalue())
        super().close()


class RamFileSystem(FileSystem):
    @classmethod
    def scheme(cls) -> str:
        return SCHEME

    def join(self, basepath: str, *paths: str) -> str:
        return posixpath.join(basepath.rstrip("/"), *(p.strip("/") for p in paths))

    def split(self, path: str) -> tuple[str, str]:
        head, _, tail = path.rstrip("/").rpartition("/")
        return head, tail

    def mkdirs(self, path: str) -> None:
        pass  # object stores have no folders

    def has_dirs(self) -> bool:
        return False

    def _list(self, dir_or_prefix: str):
        # A prefix, as on GCS: "a/b/" lists that folder, "a/b/train-" the files so named.
        root = dir_or_prefix if dir_or_prefix.endswith("/") else posixpath.dirname(dir_or_prefix)
        if not tf.io.gfile.exists(root):
            return
        for folder, _, files in tf.io.gfile.walk(root):
            for name in files:
                path = self.join(folder, name)
                if path.startswith(dir_or_prefix):
                    yield self.metadata(path)

    def _open(self, path: str, mode: str, compression_type: str):
        compression_type = FileSystem._get_compression_type(path, compression_type)
        raw = _Upload(path) if "w" in mode else _Download(path)
        if compression_type == CompressionTypes.UNCOMPRESSED:
            return raw
        return CompressedFile(raw, compression_type=compression_type)

    def create(self, path, mime_type="application/octet-stream",
               compression_type=CompressionTypes.AUTO):
        tf.io.gfile.makedirs(posixpath.dirname(path))
        return self._open(path, "wb", compression_type)

    def open(self, path, mime_type="application/octet-stream",
             compression_type=CompressionTypes.AUTO):
        return self._open(path, "rb", compression_type)

    def copy(self, source_file_names, destination_file_names):
        for source, destination in zip(source_file_names, destination_file_names):
            tf.io.gfile.makedirs(posixpath.dirname(destination))
            tf.io.gfile.copy(source, destination, overwrite=True)

    def rename(self, source_file_names, destination_file_names):
        errors = {}
        for source, destination in zip(source_file_names, destination_file_names):
            try:
                tf.io.gfile.makedirs(posixpath.dirname(destination))
                tf.io.gfile.rename(source, destination, overwrite=True)
            except Exception as err:
                errors[(source, destination)] = err
        if errors:
            raise BeamIOError("Rename operation failed", errors)

    def exists(self, path: str) -> bool:
        return tf.io.gfile.exists(path)

    def size(self, path: str) -> int:
        return tf.io.gfile.stat(path).length

    def last_updated(self, path: str) -> float:
        return tf.io.gfile.stat(path).mtime_nsec / 1e9

    def checksum(self, path: str) -> str:
        return str(self.size(path))

    def metadata(self, path: str) -> FileMetadata:
        if not self.exists(path):
            raise BeamIOError(f"Path does not exist: {path}")
        stat = tf.io.gfile.stat(path)
        return FileMetadata(path, stat.length, stat.mtime_nsec / 1e9)

    def delete(self, paths):
        errors = {}
        for path in paths:
            try:
                if tf.io.gfile.isdir(path):
                    tf.io.gfile.rmtree(path)
                elif tf.io.gfile.exists(path):
                    tf.io.gfile.remove(path)
                else:
                    raise FileNotFoundError(path)
            except Exception as err:
                errors[path] = err
        if errors:
            raise BeamIOError("Delete operation failed", errors)
