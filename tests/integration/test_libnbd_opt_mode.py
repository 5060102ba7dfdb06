#!/usr/bin/python3
"""Option mode: LIST, INFO on an unknown export (error, connection alive),
LIST_META_CONTEXT, then GO on a good export."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lib import Blockd, check, fail, import_nbd

nbd = import_nbd()

with Blockd('--blockdev', 'driver=memory,node-name=m0,size=16M',
            '--blockdev', 'driver=memory,node-name=m1,size=4M',
            '--export', 'type=nbd,id=e0,node-name=m0,name=good,description=the good one',
            '--export', 'type=nbd,id=e1,node-name=m1,name=other') as d:
    h = nbd.NBD()
    h.set_opt_mode(True)
    h.connect_unix(d.sock)
    check(h.aio_is_negotiating(), 'not negotiating after connect in opt mode')

    exports = []
    n = h.opt_list(lambda name, desc: exports.append((name, desc)))
    check(n == 2, 'opt_list returned %d, want 2' % n)
    check(exports == [('good', 'the good one'), ('other', '')],
          'opt_list gave %r' % exports)

    h.set_export_name('no-such-export')
    try:
        h.opt_info()
        fail('opt_info on an unknown export succeeded')
    except nbd.Error:
        pass
    check(h.aio_is_negotiating(), 'connection left negotiation after a failed INFO')

    h.set_export_name('other')
    h.opt_info()
    check(h.get_size() == 4 << 20, 'opt_info(other): size %d' % h.get_size())

    contexts = []
    h.set_export_name('good')
    h.opt_list_meta_context(lambda name: contexts.append(name))
    check('base:allocation' in contexts, 'LIST_META_CONTEXT gave %r' % contexts)

    h.add_meta_context('base:allocation')
    h.opt_go()
    check(h.aio_is_ready(), 'not ready after GO')
    check(h.get_size() == 16 << 20, 'size after GO: %d' % h.get_size())
    check(h.can_meta_context('base:allocation'), 'base:allocation not negotiated')
    check(h.pread(4096, 0) == bytes(4096), 'read after GO returned wrong data')
    h.shutdown()

    # ABORT ends negotiation cleanly; the daemon keeps serving.
    a = nbd.NBD()
    a.set_opt_mode(True)
    a.connect_unix(d.sock)
    a.opt_abort()
    check(a.aio_is_closed(), 'not closed after opt_abort')
    check(d.connect('good').get_size() == 16 << 20, 'daemon stopped serving after ABORT')
