"""PyTorch over sluice: a Dataset whose samples are read through sluice, and a Sampler that
hands each epoch's order to sluice before the epoch starts, so the samples it does not have
are fetched in exactly that order, ahead of the reads.

    from sluice.torch import SluiceDataset, EpochSampler
    ds = SluiceDataset(paths, decode=my_decode, config="sluice.yaml")
    loader = DataLoader(ds, batch_size=64, sampler=EpochSampler(ds, seed=1))

Where the order goes:
- with a SluiceDataset read in this process (DataLoader num_workers=0), to its Sluice
  (Sluice.prefetch): the reads move the window;
- with files on a sluice mount (any Dataset, any num_workers: the workers' opens reach the
  mount), to the mount's control file: EpochSampler(ds, paths=..., order_file=MOUNT/.sluice/order).
"""
import os

import torch
from torch.utils.data import Dataset, Sampler

from . import Sluice


class SluiceDataset(Dataset):
    """Samples at namespace paths, read whole through sluice; decode(bytes) makes the sample
    (default: the bytes). Each process opens its own Sluice (DataLoader workers fork)."""

    def __init__(self, paths, decode=None, config=None, cache_dir=None):
        self.paths = list(paths)
        self.decode = decode
        self._args = (config, cache_dir)
        self._sl = None

    def sluice(self):
        """This process's Sluice."""
        if self._sl is None or self._sl._pid != os.getpid():
            self._sl = Sluice(*self._args)
        return self._sl

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        data = self.sluice().read(self.paths[i])
        return self.decode(data) if self.decode else data

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_sl"] = None  # a Sluice does not cross processes
        return state


class EpochSampler(Sampler):
    """A new shuffle every epoch (seeded: seed + epoch), handed to sluice before the epoch's
    first sample is read. set_epoch(e) picks the epoch, as DistributedSampler's does; without
    it each iteration is the next epoch.

    ahead (default True): when an epoch starts, the next epoch's order is handed over too,
    appended to the running one, so that sluice goes on fetching into the next epoch while the
    last samples of this one (often all cached) are read and between epochs. After the last
    epoch that is a budget's worth fetched for nothing."""

    def __init__(self, dataset, seed=0, paths=None, order_file=None, budget_bytes=0, ahead=True):
        self.n = len(dataset)
        self.seed = seed
        self.epoch = 0
        self.dataset = dataset
        self.paths = list(paths) if paths is not None else getattr(dataset, "paths", None)
        if self.paths is None or len(self.paths) != self.n:
            raise ValueError("EpochSampler needs the path of every sample (paths=...)")
        self.order_file = order_file
        self.budget_bytes = budget_bytes
        self.ahead = ahead
        self.order = None  # the running sluice.Order (in-process hand-over)
        self._handed = None  # the epoch whose order was handed over ahead
        if order_file is None and not isinstance(dataset, SluiceDataset):
            raise ValueError("EpochSampler hands the order to a SluiceDataset's Sluice, or to "
                             "a mount's .sluice/order file (order_file=...)")

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return self.n

    def _perm(self, epoch):
        g = torch.Generator()
        g.manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        epoch = self.epoch
        perm = self._perm(epoch)
        self.epoch += 1
        if self._handed != epoch:  # not handed over ahead (the first, or after set_epoch)
            self._hand_over([self.paths[i] for i in perm], append=False)
        self._handed = None
        if self.ahead:
            self._hand_over([self.paths[i] for i in self._perm(epoch + 1)], append=True)
            self._handed = epoch + 1
        return iter(perm)

    def _hand_over(self, order, append):
        if self.order_file:
            with open(self.order_file, "a" if append else "w") as f:
                f.write("".join(f"{p}\n" for p in order))
        elif append:
            self.order.append(order)
        else:
            if self.order is not None:
                self.order.stop()
            self.order = self.dataset.sluice().prefetch(order, budget_bytes=self.budget_bytes)
