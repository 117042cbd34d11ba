"""The C library, through ctypes: where libsluice.so is found, and its functions' signatures.

The library is found at $SLUICE_LIB, then next to this package in a source tree
(build/src/libsluice.so), then wherever the dynamic loader finds libsluice.so.0.
"""
import ctypes
import ctypes.util
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def _find():
    env = os.environ.get("SLUICE_LIB")
    if env:
        return env
    tree = os.path.join(_HERE, "..", "..", "build", "src", "libsluice.so")
    if os.path.exists(tree):
        return os.path.abspath(tree)
    return ctypes.util.find_library("sluice") or "libsluice.so.0"


lib = ctypes.CDLL(_find())

VERSION_MAX = 128
UINT64_MAX = (1 << 64) - 1


class Options(ctypes.Structure):
    _fields_ = [("config_path", ctypes.c_char_p), ("cache_dir", ctypes.c_char_p)]


class Stat(ctypes.Structure):
    _fields_ = [("type", ctypes.c_int), ("size", ctypes.c_uint64), ("mtime_ns", ctypes.c_int64),
                ("mode", ctypes.c_uint32), ("version", ctypes.c_char * VERSION_MAX)]


class Dirent(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("st", Stat)]


class LoadItem(ctypes.Structure):
    _fields_ = [("path", ctypes.c_char_p), ("offset", ctypes.c_uint64), ("length", ctypes.c_uint64)]


class OrderOptions(ctypes.Structure):
    _fields_ = [("budget_bytes", ctypes.c_uint64), ("max_inflight", ctypes.c_uint)]


class OrderStats(ctypes.Structure):
    _fields_ = [("items", ctypes.c_size_t), ("position", ctypes.c_size_t),
                ("fetched", ctypes.c_size_t), ("skipped", ctypes.c_size_t),
                ("failed", ctypes.c_size_t), ("bytes", ctypes.c_uint64),
                ("held_bytes", ctypes.c_uint64), ("inflight", ctypes.c_uint),
                ("target_inflight", ctypes.c_uint), ("fetch_s", ctypes.c_double),
                ("rate", ctypes.c_double), ("done", ctypes.c_int),
                ("on_disk", ctypes.c_size_t), ("waits", ctypes.c_size_t),
                ("floor_inflight", ctypes.c_uint)]


class CacheStats(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "hits", "misses", "ufs_bytes_read", "ufs_requests", "bytes_cached", "pages_cached",
        "capacity_bytes", "evictions", "checksum_failures")]


LIST_CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(Dirent))
P = ctypes.c_void_p


def _sig(name, res, *args):
    f = getattr(lib, name)
    f.restype = res
    f.argtypes = list(args)


_sig("sl_strerror", ctypes.c_char_p, ctypes.c_int)
_sig("sl_errmsg", ctypes.c_char_p, ctypes.c_int)
_sig("sl_open", ctypes.c_int, ctypes.POINTER(Options), ctypes.POINTER(P))
_sig("sl_close", None, P)
_sig("sl_stat", ctypes.c_int, P, ctypes.c_char_p, ctypes.POINTER(Stat))
_sig("sl_list", ctypes.c_int, P, ctypes.c_char_p, LIST_CB, P)
_sig("sl_file_open", ctypes.c_int, P, ctypes.c_char_p, ctypes.POINTER(P))
_sig("sl_file_pread", ctypes.c_int, P, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint64,
     ctypes.POINTER(ctypes.c_size_t))
_sig("sl_file_stat", ctypes.POINTER(Stat), P)
_sig("sl_file_close", None, P)
_sig("sl_load", ctypes.c_int, P, ctypes.POINTER(LoadItem), ctypes.c_size_t, P, P,
     ctypes.POINTER(ctypes.c_size_t))
_sig("sl_order_start", ctypes.c_int, P, ctypes.POINTER(LoadItem), ctypes.c_size_t,
     ctypes.POINTER(OrderOptions), ctypes.POINTER(P))
_sig("sl_order_append", ctypes.c_int, P, ctypes.POINTER(LoadItem), ctypes.c_size_t)
_sig("sl_order_reached", ctypes.c_int, P, ctypes.c_size_t)
_sig("sl_order_stats", ctypes.c_int, P, ctypes.POINTER(OrderStats))
_sig("sl_order_stop", None, P)
_sig("sl_cache_stats", ctypes.c_int, P, ctypes.POINTER(CacheStats))
_sig("sl_cache_stats_reset", ctypes.c_int, P)
_sig("sl_cache_dir", ctypes.c_char_p, P)
