#!/usr/bin/python3
"""Pull mode (fleecing): one transaction disables the old bitmap, adds a
new one and starts a sync=none backup of the source into an overlay node;
the overlay is exported read-only with the frozen bitmap.  While a writer
rewrites the whole source, a client reading the export sees exactly the
source at the checkpoint, qemu:dirty-bitmap:b0 reports exactly the clusters
written before it, and base:allocation answers; cancelling the job ends it.
With a scratch file, the overlay stores only the clusters guests overwrote."""
import os
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from backup_lib import (Daemon, add_source, blockd_cmd, check, connect, import_nbd, ok,  # noqa: E402
                        read_all, summary, wait_job_end, write)

SIZE = 16 << 20
CLUSTER = 64 << 10


def main():
    nbd = import_nbd()
    with Daemon(blockd_cmd()) as d:
        q = d.qmp()
        add_source(q, d, 'src', SIZE)
        write(d, 'src', 0, bytes(range(256)) * (SIZE // 256))
        ok(q.cmd('block-dirty-bitmap-add', {'node': 'src', 'name': 'b0'}), 'b0')
        changed = [3, 4, 100, 200]
        for c in changed:
            write(d, 'src', c * CLUSTER, b'\xcc' * CLUSTER)
        checkpoint = read_all(d.path('nbd.sock'), 'src')

        ok(q.cmd('blockdev-add', {'driver': 'overlay', 'node-name': 'fl', 'backing': 'src'}), 'overlay')
        ok(q.cmd('transaction', {'actions': [
            {'type': 'block-dirty-bitmap-disable', 'data': {'node': 'src', 'name': 'b0'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'src', 'name': 'b1'}},
            {'type': 'blockdev-backup', 'data': {'job-id': 'fleece', 'device': 'src', 'target': 'fl',
                                                 'sync': 'none'}}]}), 'transaction')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'pull', 'node-name': 'fl', 'name': 'pull',
                                      'bitmaps': [{'node': 'src', 'name': 'b0'}]}), 'export')

        h = nbd.NBD()
        h.add_meta_context('qemu:dirty-bitmap:b0')
        h.add_meta_context('base:allocation')
        h.set_export_name('pull')
        h.connect_unix(d.path('nbd.sock'))
        check(h.is_read_only(), 'the pull export should be read-only')

        def rewrite():
            g = connect(d.path('nbd.sock'), 'src')
            for off in range(0, SIZE, 256 << 10):
                g.pwrite(b'\xee' * (256 << 10), off)
            g.shutdown()
        writer = threading.Thread(target=rewrite)
        writer.start()
        got = bytearray()
        for off in range(0, SIZE, 1 << 20):
            got += h.pread(1 << 20, off)
        writer.join()
        check(bytes(got) == checkpoint, 'the pulled image is not the source at the checkpoint')
        check(read_all(d.path('nbd.sock'), 'pull') == checkpoint, 'pulled image after the rewrite')

        dirty, contexts, reach = [], set(), [0]

        def cb(meta, off, entries, err):
            contexts.add(meta)
            if meta == 'qemu:dirty-bitmap:b0':
                pos = off
                for length, flags in zip(entries[0::2], entries[1::2]):
                    if flags & 1:
                        dirty.extend(range(pos // CLUSTER, (pos + length) // CLUSTER))
                    pos += length
                reach[0] = pos
            return 0
        while reach[0] < SIZE:
            h.block_status(SIZE - reach[0], reach[0], cb)
        check(dirty == changed, 'dirty clusters %r, expected %r' % (dirty, changed))
        check(contexts == {'qemu:dirty-bitmap:b0', 'base:allocation'}, 'contexts %r' % contexts)
        h.shutdown()

        ok(q.cmd('block-export-del', {'id': 'pull'}), 'export-del')
        q.wait_event('BLOCK_EXPORT_DELETED')
        ok(q.cmd('job-cancel', {'id': 'fleece'}), 'cancel')
        evs = wait_job_end(q, 'fleece')
        check(summary(evs)[-4:] == [('status', 'fleece', 'aborting'),
                                    ('BLOCK_JOB_CANCELLED', ('device', 'fleece'), ('type', 'backup')),
                                    ('status', 'fleece', 'concluded'), ('status', 'fleece', 'null')],
              'fleece end %r' % summary(evs))
        ok(q.cmd('blockdev-del', {'node-name': 'fl'}), 'del overlay')
        ok(q.cmd('block-dirty-bitmap-remove', {'node': 'src', 'name': 'b0'}), 'remove b0')

        # A scratch file holds only the clusters the guest overwrote.
        scratch = d.path('scratch.raw')
        with open(scratch, 'wb') as f:
            f.truncate(SIZE)
        ok(q.cmd('blockdev-add', {'driver': 'file', 'node-name': 'sf', 'filename': scratch}), 'scratch')
        ok(q.cmd('blockdev-add', {'driver': 'overlay', 'node-name': 'fl2', 'backing': 'src', 'file': 'sf'}),
           'overlay 2')
        before = read_all(d.path('nbd.sock'), 'src')
        ok(q.cmd('blockdev-backup', {'job-id': 'f2', 'device': 'src', 'target': 'fl2', 'sync': 'none'}), 'f2')
        ok(q.cmd('block-export-add', {'type': 'nbd', 'id': 'p2', 'node-name': 'fl2', 'name': 'p2'}), 'export 2')
        for c in (1, 50, 51):
            write(d, 'src', c * CLUSTER + 100, b'\x01' * 1000)
        check(read_all(d.path('nbd.sock'), 'p2') == before, 'file-backed overlay is not the checkpoint')
        used = os.stat(scratch).st_blocks * 512
        check(3 * CLUSTER <= used < 8 * CLUSTER, 'scratch file uses %d bytes for 3 overwritten clusters' % used)
        ok(q.cmd('block-export-del', {'id': 'p2'}), 'export-del 2')
        q.wait_event('BLOCK_EXPORT_DELETED')
        ok(q.cmd('job-cancel', {'id': 'f2'}), 'cancel f2')
        wait_job_end(q, 'f2')
        ok(q.cmd('blockdev-del', {'node-name': 'fl2'}), 'del overlay 2')
        ok(q.cmd('blockdev-del', {'node-name': 'sf'}), 'del scratch')
        q.close()
        check(d.stop() == 0, 'daemon exit status')
    print('fleecing OK')


main()
