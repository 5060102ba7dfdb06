#!/usr/bin/python3
"""Multi-conn: 4 clients each write a region, flush, then every client sees
every region (the promise behind NBD_FLAG_CAN_MULTI_CONN)."""
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, fail, import_nbd

nbd = import_nbd()
CLIENTS = 4
REGION = 1 << 20
SIZE = 64 << 20

# Distinct random regions: client i owns a random 1 MiB-aligned slot in its 16 MiB quarter.
regions = [(i * (SIZE // CLIENTS) + int.from_bytes(os.urandom(1), 'big') % 15 * REGION,
            os.urandom(REGION)) for i in range(CLIENTS)]
errors = []


def client(d, i, barrier):
    try:
        h = d.connect()
        check(h.can_multi_conn(), 'export does not advertise multi-conn')
        offset, data = regions[i]
        h.pwrite(data, offset)
        h.flush()
        barrier.wait(timeout=60)          # every client has flushed
        for j, (off, want) in enumerate(regions):
            if h.pread(REGION, off) != want:
                errors.append('client %d does not see region %d at %d' % (i, j, off))
        h.shutdown()
    except Exception as e:                # reported by the main thread
        errors.append('client %d: %r' % (i, e))
        barrier.abort()


with Blockd('--blockdev', 'driver=memory,node-name=m0,size=%d' % SIZE,
            '--export', 'type=nbd,id=e0,node-name=m0,writable=on') as d:
    r = subprocess.run(['nbdinfo', '--can', 'multi-conn', d.uri()])
    check(r.returncode == 0, 'nbdinfo --can multi-conn: exit %d, want 0' % r.returncode)
    barrier = threading.Barrier(CLIENTS)
    threads = [threading.Thread(target=client, args=(d, i, barrier)) for i in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        fail('; '.join(errors))
