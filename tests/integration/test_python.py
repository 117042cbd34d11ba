"""The Python binding (python/sluice over libsluice.so), under Debian's /usr/bin/python3: files
and ranges read through the cache, errors raised with sluice's message, the fsspec file system,
and a PyTorch DataLoader that trains a tiny model for two epochs reading only through sluice,
its second epoch served from the cache; and the sampler's order handed to a mount."""
import errno
import json
import os
import struct
import sys
import time

from harness import MiB, SluiceCase, main, read_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import sluice  # noqa: E402


class BindingTest(SluiceCase):

    def open(self):
        sl = sluice.Sluice(config=self.config)
        self.addCleanup(sl.close)
        return sl

    def test_files_and_ranges_through_the_cache(self):
        data = self.make_file("a/b.bin", 3 * MiB + 17)
        self.make_file("a/c.txt", 5)
        sl = self.open()
        self.assertEqual(sl.read("/data/a/b.bin"), data)
        self.assertEqual(sl.read("/data/a/b.bin", MiB - 3, 10), data[MiB - 3:MiB + 7])
        self.assertEqual(sl.read("/data/a/b.bin", len(data) + 5), b"")
        with sl.open("/data/a/b.bin") as f:
            f.seek(-17, os.SEEK_END)
            self.assertEqual(f.read(), data[-17:])
            f.seek(100)
            self.assertEqual(f.read(4), data[100:104])
        st = sl.stat("/data/a/b.bin")
        self.assertEqual((st["type"], st["size"]), ("file", len(data)))
        self.assertEqual(sorted(n for n, _ in sl.listdir("/data/a")), ["b.bin", "c.txt"])
        self.assertEqual(sl.read(f"file://{self.data}/a/c.txt"), read_file(os.path.join(self.data, "a/c.txt")))
        before = sl.cache_stats()
        sl.read("/data/a/b.bin")
        after = sl.cache_stats()
        self.assertEqual(after["misses"], before["misses"], "a second read is hits")
        self.assertGreater(after["hits"], before["hits"])

    def test_errors_name_what_was_wrong(self):
        sl = self.open()
        with self.assertRaises(sluice.Error) as e:
            sl.read("/data/nope.bin")
        self.assertEqual(e.exception.errno, errno.ENOENT)
        self.assertIn("/data/nope.bin", str(e.exception))
        with self.assertRaises(sluice.Error) as e:
            sl.stat("/elsewhere/x")
        self.assertIn("/elsewhere", str(e.exception))
        bad = os.path.join(self.tmp, "bad.yaml")
        with open(bad, "w") as f:
            f.write("cache:\n  size: lots\n")
        with self.assertRaises(sluice.Error) as e:
            sluice.Sluice(config=bad)
        self.assertIn("bad.yaml:2", str(e.exception))

    def test_fsspec(self):
        import fsspec
        import sluice.fsspec  # noqa: F401  (registers "sluice")
        data = self.make_file("t/x.bin", 2 * MiB + 5)
        fs = fsspec.filesystem("sluice", config=self.config)
        self.assertEqual(fs.ls("/data/t", detail=False), ["/data/t/x.bin"])
        self.assertEqual(fs.info("/data/t/x.bin")["size"], len(data))
        self.assertEqual(fs.cat_file("/data/t/x.bin", start=MiB, end=MiB + 9), data[MiB:MiB + 9])
        with fs.open("sluice:///data/t/x.bin", "rb") as f:
            f.seek(2 * MiB)
            self.assertEqual(f.read(), data[2 * MiB:])
        with self.assertRaises(PermissionError):
            fs.open("/data/t/y.bin", "wb")


def make_samples(root, n):
    """n samples of 8x8 float32 pixels and a label byte: label = whether the mean is above 0.5."""
    import random
    rng = random.Random(3)
    os.makedirs(root, exist_ok=True)
    names = []
    for i in range(n):
        label = i % 2
        px = [min(1.0, max(0.0, rng.gauss(0.7 if label else 0.3, 0.15))) for _ in range(64)]
        name = f"s{i:04d}.bin"
        with open(os.path.join(root, name), "wb") as f:
            f.write(struct.pack("64f", *px) + bytes([label]))
        names.append(name)
    return names


def decode(b):
    import torch
    x = torch.frombuffer(bytearray(b[:256]), dtype=torch.float32)
    return x, int(b[256])


class TorchTest(SluiceCase):

    def test_dataloader_trains_two_epochs_second_from_the_cache(self):
        import torch
        from sluice.torch import EpochSampler, SluiceDataset
        names = make_samples(os.path.join(self.data, "train"), 256)
        ds = SluiceDataset([f"/data/train/{n}" for n in names], decode=decode, config=self.config)
        sampler = EpochSampler(ds, seed=1)
        loader = torch.utils.data.DataLoader(ds, batch_size=32, sampler=sampler, num_workers=0)
        torch.manual_seed(0)
        model = torch.nn.Linear(64, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        sl = ds.sluice()
        sl.cache_stats_reset()
        losses, epochs = [], []
        for epoch in range(2):
            seen = []
            for x, y in loader:
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
                seen.append(len(y))
            time.sleep(0.3)
            epochs.append((sl.cache_stats(), sampler.order.stats()))
            self.assertEqual(sum(seen), 256)
        first, second = epochs[0][0], epochs[1][0]
        self.assertEqual(first["misses"], 256, "each sample fetched once in the first epoch")
        self.assertEqual(second["misses"], 256, "the second epoch fetched nothing")
        self.assertGreaterEqual(second["hits"] - first["hits"], 256, "the second epoch is hits")
        # The sampler handed each epoch's order over, the next epoch's an epoch ahead (appended
        # to the running order), and the reads went through it.
        for epoch, (_, order) in enumerate(epochs):
            self.assertEqual((order["items"], order["position"]),
                             (256 * (epoch + 2), 256 * (epoch + 1)))
        self.assertEqual(order["failed"], 0)
        self.assertLess(sum(losses[-8:]) / 8, sum(losses[:8]) / 8, "the model learned")

    def test_order_to_a_mount_with_workers(self):
        import torch
        from sluice.torch import EpochSampler
        names = make_samples(os.path.join(self.data, "train"), 128)
        point = os.path.join(self.tmp, "mnt")
        os.makedirs(point)
        self.sluice("mount", point)
        self.mounted.append(point)  # unmounted by tearDown, before the folder is removed
        paths = [os.path.join(point, "data", "train", n) for n in names]

        class Files(torch.utils.data.Dataset):
            def __len__(self):
                return len(paths)

            def __getitem__(self, i):
                with open(paths[i], "rb") as f:
                    return decode(f.read())

        ds = Files()
        order_file = os.path.join(point, ".sluice", "order")
        sampler = EpochSampler(ds, seed=2, paths=paths, order_file=order_file)
        loader = torch.utils.data.DataLoader(ds, batch_size=16, sampler=sampler, num_workers=2)
        def epoch():
            """Reads an epoch through the loader; the order's figures after it."""
            self.assertEqual(sum(len(y) for _, y in loader), 128)
            time.sleep(0.3)
            with open(order_file) as f:
                return json.load(f)

        # The next epoch's order was appended through the control file (O_APPEND), and the
        # window went on into it: past the 128 items of the epoch read.
        status = epoch()
        self.assertEqual((status["items"], status["position"]), (256, 128))
        self.assertGreater(status["fetched"] + status["skipped"], 128)
        self.assertEqual(status["failed"], 0)
        # A second epoch takes up the order handed over ahead: nothing is replaced.
        status = epoch()
        self.assertEqual((status["items"], status["position"]), (384, 256))


if __name__ == "__main__":
    main()
