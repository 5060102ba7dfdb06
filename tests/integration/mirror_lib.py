"""Helpers for the mirror tests: a guest-like writer thread.

    w = Writer(d.path('nbd.sock'), 'src', image)   # image: bytearray, the expected content
    w.start(); ...; w.stop()                          # w.image then holds every acknowledged write

The writer writes random 4 KiB blocks (a counter pattern, never zero) at
random aligned offsets through NBD as fast as it can (or `rate` writes per
second), one at a time, and applies each to `image` once the server
acknowledged it, so `image` is what the disk must hold afterwards.

With tolerate_errors a write the server fails is not fatal: its number goes
to `failed` and its data to `maybe[offset]` (the block may hold it or what it
held before, until a later write there succeeds); the writer stops by itself
once the connection is dead (the daemon was killed).  matches() compares a
disk with that model.
"""

import random
import threading
import time

from backup_lib import connect, fail

BLOCK = 4096


class Writer(threading.Thread):
    def __init__(self, sock, export, image, rate=0, seed=1, size=None, tolerate_errors=False):
        """image None: no model is kept (benchmarks); `size` gives the disk size."""
        super().__init__(daemon=True)
        self.sock, self.export, self.image, self.rate = sock, export, image, rate
        self.size = len(image) if image is not None else size
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.count = 0    # writes finished (acknowledged or failed)
        self.started = 0  # writes issued
        self.log = []  # offset of write n at index n - 1
        self.error = None
        self.tolerate_errors = tolerate_errors
        self.failed = set()  # numbers of the writes that failed
        self.maybe = {}      # offset -> data of failed writes since the last good one
        self.errors = []     # the failed writes' errno names, in order
        self.disconnected = False

    def run(self):
        try:
            h = connect(self.sock, self.export)
            blocks = self.size // BLOCK
            start = time.time()
            while not self.halt.is_set():
                n = self.count + 1
                off = self.rng.randrange(blocks) * BLOCK
                data = pattern(n)
                self.started = n
                if self.image is not None:
                    self.log.append(off)
                try:
                    h.pwrite(data, off)
                except Exception as e:
                    if not self.tolerate_errors:
                        raise
                    self.failed.add(n)
                    self.errors.append(getattr(e, 'errno', None) or str(e))
                    self.maybe.setdefault(off, []).append(data)
                    if h.aio_is_dead() or h.aio_is_closed():
                        self.count = n
                        self.disconnected = True
                        return
                    if not self.rate:
                        time.sleep(0.005)
                else:
                    if self.image is not None:
                        self.image[off:off + BLOCK] = data
                        self.maybe.pop(off, None)
                self.count = n
                if self.rate:
                    delay = start + n / self.rate - time.time()
                    if delay > 0:
                        time.sleep(delay)
            h.flush()
            h.shutdown()
        except Exception as e:  # reported by stop()
            self.error = e

    def stop(self):
        self.halt.set()
        self.join(30)
        if self.is_alive():
            fail('writer did not stop')
        if self.error:
            fail('writer failed: %r' % (self.error,))
        return self.count


def pattern(n):
    """The block written by write number n (n >= 1)."""
    return (n.to_bytes(8, 'little') + bytes([n % 251 + 1]) * 8) * (BLOCK // 16)


def consistent_point(disk, initial, log, failed=()):
    """The range (lo, hi) of k such that `disk` equals `initial` after the
    writer's first k writes (the `failed` ones never landing), or None if
    there is no such k."""
    last = {}   # block offset -> write number that `disk` shows (0: initial)
    for off in range(0, len(disk), BLOCK):
        block = disk[off:off + BLOCK]
        if block == initial[off:off + BLOCK]:
            last[off] = 0
            continue
        n = int.from_bytes(block[:8], 'little')
        if n < 1 or n > len(log) or log[n - 1] != off or block != pattern(n) or n in failed:
            return None
        last[off] = n
    lo = max(last.values())
    hi = len(log)
    for i, off in enumerate(log, 1):  # a later write to a block it shows older
        if i > last[off] and i not in failed:
            hi = min(hi, i - 1)
    return (lo, hi) if lo <= hi else None


def matches(disk, image, maybe=None):
    """The first block offset where `disk` differs from the writer's model
    (`image`, or one of the failed writes in `maybe` for that block), or None."""
    maybe = maybe or {}
    for off in range(0, max(len(disk), len(image)), BLOCK):
        block = disk[off:off + BLOCK]
        if block != image[off:off + BLOCK] and block not in maybe.get(off, ()):
            return off
    return None


def fill(sock, export, image):
    """Writes the non-zero MiB of `image` to the export (a source to mirror)."""
    h = connect(sock, export)
    for off in range(0, len(image), 1 << 20):
        chunk = bytes(image[off:off + (1 << 20)])
        if any(chunk):
            h.pwrite(chunk, off)
    h.flush()
    h.shutdown()


def make_image(size):
    """A source image: 1 MiB of data every 4 MiB, the rest zero (holes in memory)."""
    image = bytearray(size)
    for i in range(0, size, 4 << 20):
        image[i:i + (1 << 20)] = bytes([(i >> 20) % 255 + 1]) * (1 << 20)
    return image


def first_difference(a, b):
    for i in range(0, min(len(a), len(b)), BLOCK):
        if a[i:i + BLOCK] != b[i:i + BLOCK]:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))
