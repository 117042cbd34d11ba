"""sluice for Python: files and byte ranges read through sluice's cache, and the epoch's order
handed to it, over libsluice.so (ctypes; nothing to compile).

    import sluice
    sl = sluice.Sluice()                       # finds sluice.yaml as the CLI does
    data = sl.read("/imagenet/train/0001.jpg")  # bytes, through the cache
    with sl.open("/lake/a.parquet") as f:       # a binary file object (seek, read, readinto)
        f.seek(-8, 2); footer = f.read(8)
    order = sl.prefetch(["/imagenet/train/0003.jpg", ...])   # fetched in that order, ahead
    sl.cache_stats()["hits"]

Errors are raised as sluice.Error (an OSError whose errno is set when sluice's error is an
errno) with sluice's message, which names the path and the cause. One Sluice may be used by
many threads. A Sluice does not survive fork(): open one in each process (the PyTorch
Dataset in sluice.torch does so in each DataLoader worker).
"""
import ctypes
import errno as _errno
import io
import os
import weakref

from . import _lib
from ._lib import lib

__all__ = ["Sluice", "File", "Order", "Error"]


class Error(OSError):
    """A failure of sluice: errno is set for errno codes; .code is sluice's own code."""

    def __init__(self, code, message):
        super().__init__(-code if -code < 1000 else None, message)
        self.code = code


def _check(rc):
    if rc < 0:
        raise Error(rc, lib.sl_errmsg(rc).decode(errors="replace"))
    return rc


def _b(path):
    return os.fsencode(path)


class Sluice:
    """An open sluice: a config (sluice.yaml), its namespace and its cache."""

    def __init__(self, config=None, cache_dir=None):
        opts = _lib.Options(_b(config) if config else None, _b(cache_dir) if cache_dir else None)
        handle = ctypes.c_void_p()
        _check(lib.sl_open(ctypes.byref(opts), ctypes.byref(handle)))
        self._h = handle
        self._pid = os.getpid()
        self._open = weakref.WeakSet()  # files and orders: closed before the library is

    def close(self):
        if self._h and self._pid == os.getpid():
            for x in list(self._open):
                x.close()
            lib.sl_close(self._h)
        self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _handle(self):
        if not self._h:
            raise ValueError("this Sluice is closed")
        if self._pid != os.getpid():
            raise RuntimeError("a Sluice does not survive fork(): open one in this process")
        return self._h

    # ---- metadata ----

    def stat(self, path):
        """{'type': 'file'|'dir', 'size', 'mtime_ns', 'mode', 'version'} of path."""
        st = _lib.Stat()
        _check(lib.sl_stat(self._handle(), _b(path), ctypes.byref(st)))
        return _stat_dict(st)

    def listdir(self, path):
        """[(name, stat dict)] of the directory at path, in the store's order."""
        out = []

        def cb(_arg, ent):
            out.append((os.fsdecode(ent.contents.name), _stat_dict(ent.contents.st)))
            return 0

        _check(lib.sl_list(self._handle(), _b(path), _lib.LIST_CB(cb), None))
        return out

    # ---- reading ----

    def open(self, path):
        """A binary file object reading path through the cache (version pinned at open)."""
        return File(self, path)

    def read(self, path, offset=0, length=None):
        """The bytes of path (or length bytes at offset), through the cache."""
        with self.open(path) as f:
            size = f.size
            if offset >= size:
                return b""
            n = size - offset if length is None else min(length, size - offset)
            buf = bytearray(n)
            got = f.pread_into(buf, offset)
            return bytes(buf[:got])

    # ---- the cache ----

    def load(self, paths):
        """Warms the disk cache with paths (files), in that order."""
        items, _keep = _items(paths)
        failed = ctypes.c_size_t()
        _check(lib.sl_load(self._handle(), items, len(paths), None, None, ctypes.byref(failed)))

    def prefetch(self, order, budget_bytes=0, max_inflight=0):
        """Hands over the order in which the files (or (path, offset, length) ranges) will be
        read: sluice fetches them in exactly that order, a window ahead of their opens through
        this Sluice. Returns an Order; stop it (or let it go) when the epoch is over."""
        return Order(self, order, budget_bytes, max_inflight)

    def cache_stats(self):
        """The cache's figures (the keys of `sluice cache stats --json`)."""
        s = _lib.CacheStats()
        _check(lib.sl_cache_stats(self._handle(), ctypes.byref(s)))
        return {name: getattr(s, name) for name, _ in _lib.CacheStats._fields_}

    def cache_stats_reset(self):
        _check(lib.sl_cache_stats_reset(self._handle()))

    @property
    def cache_dir(self):
        d = lib.sl_cache_dir(self._handle())
        return os.fsdecode(d) if d else None


def _stat_dict(st):
    return {"type": "dir" if st.type == 2 else "file", "size": st.size, "mtime_ns": st.mtime_ns,
            "mode": st.mode, "version": st.version.decode(errors="replace")}


def _items(order):
    """A C array of items from paths or (path, offset, length) tuples, and what keeps the
    path strings alive while C uses them."""
    arr = (_lib.LoadItem * max(1, len(order)))()
    keep = []
    for i, it in enumerate(order):
        path, off, length = (it, 0, None) if isinstance(it, (str, bytes, os.PathLike)) else it
        p = _b(path)
        keep.append(p)
        arr[i] = _lib.LoadItem(p, off, _lib.UINT64_MAX if length is None else length)
    return arr, keep


class File(io.RawIOBase):
    """A file read through sluice's cache: every byte comes from the version pinned at open."""

    def __init__(self, sl, path):
        super().__init__()
        self._sl = sl
        self.name = path
        h = ctypes.c_void_p()
        _check(lib.sl_file_open(sl._handle(), _b(path), ctypes.byref(h)))
        self._h = h
        self._pos = 0
        self.size = lib.sl_file_stat(h).contents.size
        sl._open.add(self)

    def readable(self):
        return True

    def seekable(self):
        return True

    def close(self):
        if getattr(self, "_h", None):
            lib.sl_file_close(self._h)
            self._h = None
        super().close()

    def pread_into(self, buf, offset):
        """Reads len(buf) bytes at offset into buf (a writable buffer); returns the count."""
        if self.closed:
            raise ValueError("I/O operation on closed file")
        n = len(buf)
        if n == 0:
            return 0
        c = (ctypes.c_char * n).from_buffer(buf)
        got = ctypes.c_size_t()
        _check(lib.sl_file_pread(self._h, c, n, offset, ctypes.byref(got)))
        return got.value

    def readinto(self, buf):
        got = self.pread_into(memoryview(buf).cast("B"), self._pos)
        self._pos += got
        return got

    def readall(self):
        buf = bytearray(max(0, self.size - self._pos))
        got = self.readinto(buf)
        return bytes(buf[:got])

    def seek(self, offset, whence=io.SEEK_SET):
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise OSError(_errno.EINVAL, "negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self):
        return self._pos


class Order:
    """An epoch's order being fetched ahead of its reader (sl_order_*)."""

    def __init__(self, sl, order, budget_bytes=0, max_inflight=0):
        self._sl = sl
        items, keep = _items(order)
        opts = _lib.OrderOptions(budget_bytes, max_inflight)
        h = ctypes.c_void_p()
        _check(lib.sl_order_start(sl._handle(), items, len(order), ctypes.byref(opts),
                                  ctypes.byref(h)))
        self._h = h
        del keep  # sl_order_start copied the paths
        sl._open.add(self)

    def append(self, order):
        """Puts more items on the end (the next epoch's order, handed over while this one is
        read): the window runs on into them."""
        items, keep = _items(order)
        _check(lib.sl_order_append(self._h, items, len(order)))
        del keep  # sl_order_append copied the paths

    def reached(self, i):
        """For a reader that does not open the files through this Sluice: it is at item i
        (counted from the first item given, across appends)."""
        _check(lib.sl_order_reached(self._h, i))

    def stats(self):
        s = _lib.OrderStats()
        _check(lib.sl_order_stats(self._h, ctypes.byref(s)))
        d = {name: getattr(s, name) for name, _ in _lib.OrderStats._fields_}
        d["done"] = bool(d["done"])
        return d

    def stop(self):
        if self._h:
            lib.sl_order_stop(self._h)
            self._h = None

    close = stop

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass
