#!/usr/bin/python3
"""An NBD client node opens several connections when the server
advertises multi-conn (one per CPU, 2 to 4), one otherwise, and only
the first when the server refuses more: data written through a blockd
export onto the node, spread over the connections, then flushed, reads
back the same through blockd and directly from the server."""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import Daemon, Nbdkit, blockd_cmd, check, connect, ok, read_all  # noqa: E402

SIZE = 32 << 20


def connects(log):
    with open(log) as f:
        return sum(1 for line in f if ' Connect ' in line)


def one(q, d, name, filters, extra, want):
    log = os.path.join(d.tmp, name + '.log')
    with Nbdkit(*(['memory', str(SIZE), 'logfile=' + log] + extra), filters=['log'] + filters) as n:
        ok(q.cmd('blockdev-add', {'driver': 'nbd', 'node-name': name,
                                  'server': {'type': 'unix', 'path': n.sock}}), 'blockdev-add ' + name)
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': name, 'node-name': name, 'writable': True}), 'export')
        rng = random.Random(name)
        image = bytearray(SIZE)
        h = connect(d.path('nbd.sock'), name)
        slot = 256 << 10
        for i in rng.sample(range(SIZE // slot), 100):
            # Many writes in flight, so several connections are used at once;
            # disjoint, since NBD leaves concurrent overlapping writes unordered.
            off = i * slot + rng.randrange(0, 32) * 4096
            data = rng.randbytes(rng.randrange(1, 32) * 4096)
            h.aio_pwrite(data, off)
            image[off:off + len(data)] = data
        while h.aio_in_flight() > 0:
            h.poll(-1)
        h.flush()
        check(h.pread(SIZE, 0) == bytes(image), '%s: read back through blockd differs' % name)
        h.shutdown()
        got = connects(log)
        check(got == want, '%s: %d connections to the server, expected %d' % (name, got, want))
        ok(q.cmd('block-export-del', {'id': name}), 'export-del')
        ok(q.cmd('blockdev-del', {'node-name': name}), 'blockdev-del')
        # Directly from the server, once blockd let go (limit=1 admits one
        # client, and nbdkit may count blockd's connection a moment longer).
        deadline = time.time() + 10
        while True:
            try:
                direct = read_all(n.sock)
                break
            except Exception as e:  # nbd.Error: refused while the slot is taken
                check(time.time() < deadline, '%s: the server never admitted a direct client: %s' % (name, e))
                time.sleep(0.1)
        check(direct == bytes(image), '%s: the server holds other data' % name)
    print('%s: %d connection(s), data OK' % (name, got))


def main():
    many = min(max(os.cpu_count() or 1, 2), 4)
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        ok(q.cmd('nbd-server-start', {'addr': {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}}), 'nbd')
        one(q, d, 'multi', [], [], many)
        one(q, d, 'single', ['multi-conn'], ['multi-conn-mode=disable'], 1)
        # Advertises multi-conn but refuses a second client.
        one(q, d, 'limited', ['limit'], ['limit=1'], 1)
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('NBD client multi-conn OK')


main()
