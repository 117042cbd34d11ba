"""An fsspec file system over sluice: `fsspec.filesystem("sluice")`, or URLs such as
"sluice:///imagenet/train/0001.jpg" (the path is a namespace path of the config's mounts).

    import fsspec, sluice.fsspec           # the import registers the protocol
    fs = fsspec.filesystem("sluice", config="sluice.yaml")
    fs.ls("/imagenet/train")[:3]
    with fs.open("/lake/a.parquet") as f: ...          # pandas, pyarrow, dask take these

Read-only: sluice's writes go through `sluice cp` and the mount.
"""
from fsspec import AbstractFileSystem, register_implementation
from fsspec.spec import AbstractBufferedFile

from . import Sluice


class SluiceFileSystem(AbstractFileSystem):
    protocol = "sluice"
    root_marker = "/"

    def __init__(self, config=None, cache_dir=None, **kwargs):
        super().__init__(**kwargs)
        self.sl = Sluice(config=config, cache_dir=cache_dir)

    @classmethod
    def _strip_protocol(cls, path):
        path = super()._strip_protocol(path)
        return "/" + path.lstrip("/")

    def _info(self, path, st):
        return {"name": path, "size": st["size"], "type": "directory" if st["type"] == "dir" else "file",
                "mtime": st["mtime_ns"] / 1e9, "version": st["version"]}

    def info(self, path, **kwargs):
        path = self._strip_protocol(path)
        return self._info(path, self.sl.stat(path))

    def ls(self, path, detail=True, **kwargs):
        path = self._strip_protocol(path).rstrip("/") or "/"
        if self.sl.stat(path)["type"] != "dir":
            entries = [self.info(path)]
        else:
            base = "" if path == "/" else path
            entries = [self._info(f"{base}/{name}", st) for name, st in self.sl.listdir(path)]
        return entries if detail else [e["name"] for e in entries]

    def cat_file(self, path, start=None, end=None, **kwargs):
        path = self._strip_protocol(path)
        size = None
        if start is not None and start < 0 or end is not None and end < 0:
            size = self.sl.stat(path)["size"]
        start = 0 if start is None else start if start >= 0 else max(0, size + start)
        if end is not None and end < 0:
            end = max(0, size + end)
        return self.sl.read(path, start, None if end is None else max(0, end - start))

    def _open(self, path, mode="rb", block_size=None, autocommit=True, cache_options=None, **kwargs):
        if mode != "rb":
            raise PermissionError(f"{path}: the sluice file system is read-only here (write with `sluice cp` or the mount)")
        return SluiceFile(self, path, mode, block_size=block_size or 0, cache_type="none", **kwargs)


class SluiceFile(AbstractBufferedFile):
    """Reads go straight to sluice (which caches and reads ahead itself)."""

    def __init__(self, fs, path, mode="rb", **kwargs):
        self._f = fs.sl.open(fs._strip_protocol(path))
        super().__init__(fs, path, mode, size=self._f.size, **kwargs)

    def _fetch_range(self, start, end):
        buf = bytearray(max(0, min(end, self.size) - start))
        n = self._f.pread_into(buf, start)
        return bytes(buf[:n])

    def close(self):
        super().close()
        self._f.close()


register_implementation("sluice", SluiceFileSystem, clobber=True)
