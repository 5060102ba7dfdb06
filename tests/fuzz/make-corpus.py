#!/usr/bin/python3
"""Regenerates the seed corpus of the fuzz targets: tests/fuzz/corpus/TARGET/.

    BLOCKD=build/blockd tests/fuzz/make-corpus.py [TARGET...]

Seeds are small, valid (or deliberately almost valid) inputs: NBD
conversations built from the protocol and captured from nbdinfo and
qemu-io talking to blockd, QMP sessions, command-line option strings,
qcow2 images made by qemu-img and qemu-io (512-byte clusters so whole
images stay small; larger cluster sizes truncated to their header), and
bitmap sidecar files written by blockd itself.  Needs qemu-img, qemu-io
and nbdinfo for the captured and made ones.
"""
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, 'corpus')
sys.path.insert(0, os.path.join(HERE, '..', 'integration', 'qmp'))

KiB = 1024
MiB = 1024 * KiB


def write_seeds(target, seeds):
    d = os.path.join(CORPUS, target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    for name, data in seeds.items():
        if isinstance(data, str):
            data = data.encode()
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)
    print('%s: %d seeds, %d bytes' % (target, len(seeds), sum(len(v) for v in seeds.values())))


def be16(v): return struct.pack('>H', v)
def be32(v): return struct.pack('>I', v)
def be64(v): return struct.pack('>Q', v)


# ---------------------------------------------------------------- NBD

IHAVEOPT = b'IHAVEOPT'
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS, OPT_INFO, OPT_GO = 1, 2, 3, 5, 6, 7
OPT_STRUCTURED_REPLY, OPT_LIST_META, OPT_SET_META, OPT_EXTENDED = 8, 9, 10, 11
INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE = 1, 2, 3
CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_TRIM, CMD_CACHE, CMD_ZEROES, CMD_BLOCK_STATUS = range(8)
F_FUA, F_NO_HOLE, F_DF, F_REQ_ONE, F_FAST_ZERO, F_PAYLOAD_LEN = 1, 2, 4, 8, 16, 32
CLIENT_FLAGS = be32(3)   # fixed newstyle, no zeroes


def opt(o, data=b''):
    return IHAVEOPT + be32(o) + be32(len(data)) + data


def go_data(name, infos=()):
    name = name.encode()
    return be32(len(name)) + name + be16(len(infos)) + b''.join(be16(i) for i in infos)


def meta_data(name, queries):
    name = name.encode()
    out = be32(len(name)) + name + be32(len(queries))
    for q in queries:
        out += be32(len(q)) + q.encode()
    return out


def req(cmd, offset=0, length=0, flags=0, cookie=1, payload=b''):
    return be32(0x25609513) + be16(flags) + be16(cmd) + be64(cookie) + be64(offset) + be32(length) + payload


def ext_req(cmd, offset=0, length=0, flags=0, cookie=1, payload=b''):
    return be32(0x21e41c71) + be16(flags) + be16(cmd) + be64(cookie) + be64(offset) + be64(length) + payload


def nbd_built():
    s = {}
    s['structured-meta-go-mem0'] = (
        CLIENT_FLAGS + opt(OPT_STRUCTURED_REPLY) +
        opt(OPT_SET_META, meta_data('mem0', ['base:allocation', 'qemu:dirty-bitmap:b0', 'qemu:allocation-depth'])) +
        opt(OPT_GO, go_data('mem0', [INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE])) +
        req(CMD_WRITE, 4096, 512, cookie=1, payload=b'\x5a' * 512) +
        req(CMD_READ, 0, 8192, F_DF, cookie=2) +
        req(CMD_BLOCK_STATUS, 0, MiB, cookie=3) +
        req(CMD_BLOCK_STATUS, 4096, 65536, F_REQ_ONE, cookie=4) +
        req(CMD_ZEROES, 65536, 65536, F_NO_HOLE | F_FUA, cookie=5) +
        req(CMD_ZEROES, 0, 4096, F_FAST_ZERO, cookie=6) +
        req(CMD_TRIM, 8192, 4096, cookie=7) +
        req(CMD_CACHE, 0, 65536, cookie=8) +
        req(CMD_FLUSH, cookie=9) +
        req(CMD_READ, MiB - 512, 512, cookie=10) +
        req(CMD_DISC))
    s['extended-headers'] = (
        CLIENT_FLAGS + opt(OPT_EXTENDED) +
        opt(OPT_SET_META, meta_data('', ['base:allocation', 'qemu:dirty-bitmap:b0'])) +
        opt(OPT_GO, go_data('')) +
        ext_req(CMD_WRITE, 0, 1024, F_PAYLOAD_LEN, cookie=1, payload=b'\xa5' * 1024) +
        ext_req(CMD_WRITE, 2048, 100, cookie=2, payload=b'\x01' * 100) +
        ext_req(CMD_BLOCK_STATUS, 0, MiB, cookie=3) +
        ext_req(CMD_READ, 0, 4096, cookie=4) +
        ext_req(CMD_DISC))
    s['list-info-abort'] = (
        CLIENT_FLAGS + opt(OPT_LIST) +
        opt(OPT_LIST_META, meta_data('mem0', [])) +
        opt(OPT_LIST_META, meta_data('mem0', ['qemu:'])) +
        opt(OPT_INFO, go_data('null0', [INFO_DESCRIPTION, INFO_BLOCK_SIZE])) +
        opt(OPT_INFO, go_data('nosuch')) +
        opt(OPT_ABORT))
    s['export-name'] = (
        be32(1) + opt(OPT_EXPORT_NAME, b'null0') +
        req(CMD_READ, 0, 512) + req(CMD_READ, 64 * MiB - 4096, 4096, cookie=2) + req(CMD_DISC))
    s['not-fixed-newstyle'] = (
        be32(0) + opt(OPT_LIST) + opt(OPT_EXPORT_NAME, b'mem0') +
        req(CMD_WRITE, 0, 16, payload=b'0123456789abcdef') + req(CMD_READ, 0, 16, cookie=2) + req(CMD_DISC))
    s['option-errors'] = (
        CLIENT_FLAGS + opt(99, b'x') + opt(OPT_STARTTLS) + opt(OPT_LIST, b'junk') +
        opt(OPT_SET_META, meta_data('mem0', ['base:allocation'])) +     # before structured replies
        opt(OPT_STRUCTURED_REPLY) + opt(OPT_STRUCTURED_REPLY) +
        opt(OPT_GO, be32(100) + b'mem0' + be16(0)) +                   # name length past the data
        opt(OPT_GO, go_data('me\x00m0')) +
        opt(OPT_LIST_META, meta_data('mem0', ['base:', 'nocolon', ':x'])) +
        opt(OPT_GO, go_data('null0', [INFO_BLOCK_SIZE, 77])) +
        req(CMD_WRITE, 0, 512, payload=b'\x00' * 512) +                 # read-only export
        req(CMD_READ, 64 * MiB, 512, cookie=2) +                        # past the end
        req(CMD_BLOCK_STATUS, 0, 512, cookie=3) +                       # no meta context
        req(CMD_FLUSH, 0, 512, cookie=4) +
        req(9, 0, 512, cookie=5) +
        req(CMD_READ, 0, 512, 0x40, cookie=6) +
        req(CMD_READ, 0, 0, cookie=7) +
        req(CMD_DISC))
    # Bit 31 of the flags: fuzz-nbd-handshake.c's server that requires TLS.
    s['tls-required'] = (
        be32(0x80000003) + opt(OPT_LIST) + opt(OPT_GO, go_data('mem0')) + opt(OPT_STRUCTURED_REPLY) +
        opt(OPT_STARTTLS, b'x') + opt(OPT_EXPORT_NAME, b'mem0'))
    s['tls-required-starttls'] = (
        be32(0x80000003) + opt(OPT_INFO, go_data('null0')) + opt(OPT_STARTTLS) +
        bytes.fromhex('160301002c010000280303') + b'\x00' * 32 + bytes.fromhex('000002130101000000'))
    s['bad-magic-mid-stream'] = (
        CLIENT_FLAGS + opt(OPT_GO, go_data('mem0')) + req(CMD_READ, 0, 512) + b'\x00' * 28)
    return s


class Proxy:
    """Forwards one Unix socket to another and records what clients send."""

    def __init__(self, listen_path, target_path):
        self.target = target_path
        self.sent = []
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(listen_path)
        self.srv.listen(4)
        threading.Thread(target=self.run, daemon=True).start()

    def run(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.target)
            record = bytearray()
            self.sent.append(record)

            def pump(a, b, rec):
                try:
                    while True:
                        data = a.recv(65536)
                        if not data:
                            b.shutdown(socket.SHUT_WR)
                            return
                        if rec is not None:
                            rec += data
                        b.sendall(data)
                except OSError:
                    pass
            threading.Thread(target=pump, args=(s, c, None), daemon=True).start()
            threading.Thread(target=pump, args=(c, s, record), daemon=True).start()


def nbd_captured():
    """What libnbd (nbdinfo) and QEMU (qemu-io) send to a server with the fuzz target's exports."""
    from qmp_lib import Daemon, blockd_cmd
    s = {}
    tmp = tempfile.mkdtemp(prefix='blockd-corpus.')
    try:
        real = os.path.join(tmp, 'nbd.sock')
        with Daemon(blockd_cmd(), extra=[
                '--blockdev', 'driver=memory,node-name=mem0,size=1M',
                '--blockdev', 'driver=null-co,node-name=null0,size=67108864',
                '--nbd-server', 'addr.type=unix,addr.path=' + real]) as d:
            q = d.qmp()
            q.cmd('block-dirty-bitmap-add', {'node': 'mem0', 'name': 'b0', 'granularity': 4096})
            q.cmd('block-export-add', {'type': 'nbd', 'id': 'mem0', 'node-name': 'mem0', 'writable': True,
                                       'bitmaps': ['b0'], 'allocation-depth': True})
            q.cmd('block-export-add', {'type': 'nbd', 'id': 'null0', 'node-name': 'null0',
                                       'description': 'the null export'})
            px = os.path.join(tmp, 'proxy.sock')
            proxy = Proxy(px, real)
            runs = [
                ('nbdinfo-list', ['nbdinfo', '--list', 'nbd+unix://?socket=' + px]),
                ('nbdinfo-map-bitmap', ['nbdinfo', '--map=qemu:dirty-bitmap:b0',
                                        'nbd+unix:///mem0?socket=' + px]),
                ('nbdinfo-content', ['nbdinfo', '--content', 'nbd+unix:///mem0?socket=' + px]),
                ('qemu-io-rw', ['qemu-io', '-f', 'raw', '-c', 'write -P 0x33 4096 8192', '-c', 'read 0 16384',
                                '-c', 'write -z 65536 65536', '-c', 'discard 8192 4096', '-c', 'flush',
                                'nbd+unix:///mem0?socket=' + px]),
                ('qemu-img-map', ['qemu-img', 'map', '--output=json', '-f', 'raw',
                                  'nbd+unix:///null0?socket=' + px]),
            ]
            for name, cmd in runs:
                if not shutil.which(cmd[0]):
                    print('skipping %s: %s is not installed' % (name, cmd[0]))
                    continue
                before = len(proxy.sent)
                subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
                time.sleep(0.2)
                for i, rec in enumerate(proxy.sent[before:]):
                    s[name + ('' if i == 0 else '-%d' % i)] = bytes(rec)
            proxy.srv.close()
            d.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return s


def nbd_wire():
    """Contexts and operations for fuzz-nbd-wire.c's layout."""
    def ctx(bits, bmin=1, bpref=4096, bmax=32 * MiB, size=MiB):
        return be16(bits) + be32(bmin) + be32(bpref) + be32(bmax) + be64(size)
    rw = 0x00ff | (1 << 8) | (1 << 10) | (1 << 13) | (1 << 15)     # all capabilities, structured, meta
    s = {}
    s['compact-requests'] = ctx(rw) + b''.join(
        b'\x00' + r for r in [req(CMD_READ, 0, 4096, F_DF), req(CMD_WRITE, 512, 512, F_FUA),
                              req(CMD_FLUSH), req(CMD_TRIM, 0, MiB), req(CMD_ZEROES, 4096, 4096, F_FAST_ZERO),
                              req(CMD_BLOCK_STATUS, 0, MiB, F_REQ_ONE), req(CMD_CACHE, MiB - 1, 1),
                              req(CMD_READ, MiB, 1), req(CMD_DISC)])
    s['extended-requests'] = ctx(rw | (1 << 14), size=1 << 40) + b''.join(
        b'\x00' + r for r in [ext_req(CMD_WRITE, 0, 65536, F_PAYLOAD_LEN), ext_req(CMD_READ, 0, 1 << 33),
                              ext_req(CMD_BLOCK_STATUS, 1 << 39, 1 << 39), ext_req(CMD_TRIM, 0, 0)])
    s['read-only-aligned'] = ctx(0x1000 | 0x02, bmin=4096, bpref=65536, bmax=MiB, size=64 * MiB) + b''.join(
        b'\x00' + r for r in [req(CMD_READ, 4096, 8192), req(CMD_READ, 100, 4096), req(CMD_WRITE, 0, 4096),
                              req(CMD_READ, 64 * MiB - 4096, 4096)])
    s['options'] = ctx(rw) + b''.join([
        b'\x01' + be16(len(go_data('mem0', [1, 2, 3]))) + go_data('mem0', [1, 2, 3]),
        b'\x01' + be16(6) + be32(0) + be16(0),
        b'\x02' + be16(len(meta_data('mem0', ['base:allocation', 'qemu:']))) +
        meta_data('mem0', ['base:allocation', 'qemu:']),
        b'\x02' + be16(len(meta_data('', ['qemu:dirty-bitmap:b0']))) + meta_data('', ['qemu:dirty-bitmap:b0'])])
    s['extents'] = ctx(rw) + b''.join([
        b'\x03' + b'\x00\x00\x05' + be64(0) + be32(MiB) +
        b'\x00' + be16(4096) + b'\x00' + b'\x00' + be16(4096) + b'\x00' + b'\x00' + be16(8192) + b'\x03' +
        b'\x80' + be64(1 << 30) + b'\x01',
        b'\x03' + b'\x01\x01\x00' + be64(512) + be64(1 << 33) + b'\x80' + be64(1 << 32) + b'\x02',
        b'\x04' + be16(5) + b'\x01' + be16(0),
        b'\x04' + be16(95) + b'\x01' + be16(16)])
    return s


# ---------------------------------------------------------------- QMP

def qmp_session(*msgs, caps=True):
    import json
    out = ['{"execute": "qmp_capabilities"}'] if caps else []
    for m in msgs:
        out.append(m if isinstance(m, str) else json.dumps(m))
    return '\r\n'.join(out) + '\r\n'


def qmp():
    s = {}
    s['query'] = qmp_session({'execute': 'query-version', 'id': 1}, {'execute': 'query-commands'},
                             {'execute': 'query-named-block-nodes', 'arguments': {'flat': True}},
                             {'execute': 'query-block-exports'}, {'execute': 'query-jobs'},
                             {'execute': 'query-block-jobs'})
    s['schema'] = qmp_session({'execute': 'query-qmp-schema'})
    s['bitmaps'] = qmp_session(
        {'execute': 'blockdev-add', 'arguments': {'driver': 'memory', 'node-name': 'm1', 'size': 4194304}},
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'm1', 'name': 'b1', 'granularity': 65536}},
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'mem0', 'name': 'b2', 'disabled': True}},
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'mem0', 'name': 'b3', 'granularity': 512}},
        {'execute': 'block-dirty-bitmap-enable', 'arguments': {'node': 'mem0', 'name': 'b2'}},
        {'execute': 'block-dirty-bitmap-merge', 'arguments': {
            'node': 'mem0', 'target': 'b2', 'bitmaps': ['b3', {'node': 'mem0', 'name': 'b3'}]}},
        {'execute': 'x-debug-block-dirty-bitmap-sha256', 'arguments': {'node': 'mem0', 'name': 'b2'}},
        {'execute': 'block-dirty-bitmap-clear', 'arguments': {'node': 'mem0', 'name': 'b2'}},
        {'execute': 'block-dirty-bitmap-disable', 'arguments': {'node': 'm1', 'name': 'b1'}},
        {'execute': 'query-named-block-nodes'},
        {'execute': 'block-dirty-bitmap-remove', 'arguments': {'node': 'mem0', 'name': 'b3'}},
        {'execute': 'blockdev-del', 'arguments': {'node-name': 'm1'}})
    s['transaction'] = qmp_session(
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'mem0', 'name': 'a'}},
        {'execute': 'transaction', 'arguments': {'actions': [
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'mem0', 'name': 'b', 'granularity': 4096}},
            {'type': 'block-dirty-bitmap-clear', 'data': {'node': 'mem0', 'name': 'a'}},
            {'type': 'block-dirty-bitmap-merge', 'data': {'node': 'mem0', 'target': 'b', 'bitmaps': ['a']}},
            {'type': 'block-dirty-bitmap-disable', 'data': {'node': 'mem0', 'name': 'a'}}],
            'properties': {'completion-mode': 'grouped'}}},
        {'execute': 'transaction', 'arguments': {'actions': [
            {'type': 'block-dirty-bitmap-remove', 'data': {'node': 'mem0', 'name': 'b'}},
            {'type': 'abort', 'data': {}}]}},
        {'execute': 'query-named-block-nodes'})
    s['exports'] = qmp_session(
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'mem0', 'name': 'b0'}},
        {'execute': 'block-export-add', 'arguments': {
            'type': 'nbd', 'id': 'e0', 'node-name': 'mem0', 'writable': True, 'bitmaps': ['b0'],
            'allocation-depth': True, 'description': 'd'}},
        {'execute': 'nbd-server-add', 'arguments': {'device': 'null0', 'name': 'n', 'writable': False}},
        {'execute': 'query-block-exports'},
        {'execute': 'block-dirty-bitmap-remove', 'arguments': {'node': 'mem0', 'name': 'b0'}},
        {'execute': 'nbd-server-remove', 'arguments': {'name': 'n', 'mode': 'hard'}},
        {'execute': 'block-export-del', 'arguments': {'id': 'e0'}},
        {'execute': 'nbd-server-stop'},
        {'execute': 'block-export-add', 'arguments': {'type': 'nbd', 'id': 'e1', 'node-name': 'mem0'}})
    s['graph'] = qmp_session(
        {'execute': 'blockdev-add', 'arguments': {'driver': 'raw', 'node-name': 'r0', 'file': 'mem0',
                                                  'offset': 4096, 'size': 65536}},
        {'execute': 'blockdev-add', 'arguments': {'driver': 'overlay', 'node-name': 'o0', 'backing': 'null0'}},
        {'execute': 'blockdev-add', 'arguments': {'driver': 'qcow2', 'node-name': 'q0', 'file': 'mem0'}},
        {'execute': 'blockdev-add', 'arguments': {'driver': 'raw', 'node-name': 'r1', 'read-only': True,
                                                  'file': {'driver': 'null-co', 'node-name': 'n1',
                                                           'size': 1048576, 'read-zeroes': True}}},
        {'execute': 'blockdev-add', 'arguments': {'driver': 'memory', 'node-name': 'mem0', 'size': '1M'}},
        {'execute': 'query-named-block-nodes'},
        {'execute': 'blockdev-del', 'arguments': {'node-name': 'mem0'}},
        {'execute': 'blockdev-del', 'arguments': {'node-name': 'r0'}},
        {'execute': 'blockdev-del', 'arguments': {'node-name': 'o0'}})
    s['objects-jobs'] = qmp_session(
        {'execute': 'object-add', 'arguments': {'qom-type': 'authz-simple', 'id': 'auth0', 'identity': 'alice'}},
        {'execute': 'object-add', 'arguments': {'qom-type': 'tls-creds-psk', 'id': 'tls0', 'endpoint': 'server'}},
        {'execute': 'object-del', 'arguments': {'id': 'auth0'}},
        {'execute': 'job-pause', 'arguments': {'id': 'j'}},
        {'execute': 'block-job-cancel', 'arguments': {'device': 'j', 'force': True}},
        {'execute': 'block-job-set-speed', 'arguments': {'device': 'j', 'speed': 1}},
        {'execute': 'job-dismiss', 'arguments': {'id': 'j'}})
    s['malformed'] = (
        '{"execute": "query-version"}\r\n'                     # before negotiation
        '{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}'
        '{"execute": "qmp_capabilities"}{"execute": "qmp_capabilities"}'
        '[1, 2]\n"str" 42 true null\n{"execute": 1}\n{"execute": "nosuch"}\n'
        '{"execute": "query-version", "arguments": []}\n{"execute": "query-version", "x": 1}\n'
        '{"arguments": {}}\n{"execute": "query-version", "id": {"a": [1, "b", null]}}\n'
        '{"execute": "block-dirty-bitmap-add", "arguments": {"node": "mem0", "name": "\\u00e9\\ud83d\\ude00",'
        ' "granularity": 18446744073709551616}}\n'
        '{"execute": "blockdev-add", "arguments": {"driver": "memory", "node-name": "m\\"x", "size": -1}}\n'
        '{"execute": "blockdev-add", "arguments": {"driver": "null-co", "node-name": "n2", "size": 1e300}}\n'
        '{ bad json }\n}}]]\n{"execute": "query-jobs" \n'
        + '[' * 40 + ']' * 40 + '\n{"execute": "query-version", "id": "\\')
    s['persistent-bitmaps'] = qmp_session(
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'file0', 'name': 'p0', 'persistent': True}},
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'file0', 'name': 'p1', 'persistent': True,
                                                            'granularity': 512, 'disabled': True}},
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'file0', 'name': 't0'}},
        {'execute': 'block-dirty-bitmap-merge', 'arguments': {'node': 'file0', 'target': 'p1',
                                                              'bitmaps': ['p0', 't0']}},
        {'execute': 'transaction', 'arguments': {'actions': [
            {'type': 'block-dirty-bitmap-clear', 'data': {'node': 'file0', 'name': 'p0'}},
            {'type': 'block-dirty-bitmap-enable', 'data': {'node': 'file0', 'name': 'p1'}},
            {'type': 'block-dirty-bitmap-add', 'data': {'node': 'file0', 'name': 'p2', 'persistent': True}}]}},
        {'execute': 'blockdev-add', 'arguments': {'driver': 'raw', 'node-name': 'r0', 'file': 'file0'}},
        {'execute': 'block-dirty-bitmap-add', 'arguments': {'node': 'r0', 'name': 'p3', 'persistent': True}},
        {'execute': 'block-export-add', 'arguments': {'type': 'nbd', 'id': 'e0', 'node-name': 'file0',
                                                      'writable': True, 'bitmaps': ['p0']}},
        {'execute': 'query-named-block-nodes'},
        {'execute': 'block-dirty-bitmap-remove', 'arguments': {'node': 'file0', 'name': 'p1'}},
        {'execute': 'x-debug-block-dirty-bitmap-sha256', 'arguments': {'node': 'file0', 'name': 'p2'}})
    s['blkdebug'] = qmp_session(
        {'execute': 'blockdev-add', 'arguments': {
            'driver': 'blkdebug', 'node-name': 'd0', 'image': 'mem0', 'align': 4096,
            'inject-error': [{'event': 'l1_update', 'errno': 28, 'sector': 8, 'once': True},
                             {'event': 'none', 'iotype': 'read', 'state': 2, 'immediately': True}],
            'set-state': [{'event': 'none', 'new_state': 2}, {'event': 'write_aio', 'state': 2,
                                                             'new_state': 3}]}},
        {'execute': 'blockdev-add', 'arguments': {'driver': 'qcow2', 'node-name': 'q0', 'file': 'd0'}},
        {'execute': 'blockdev-add', 'arguments': {'driver': 'raw', 'node-name': 'r0', 'file': {
            'driver': 'blkdebug', 'image': 'null0', 'max-transfer': 65536, 'opt-discard': 4096,
            'inject-error': [{'event': 'read_aio', 'iotype': 'block-status'}]}}},
        {'execute': 'block-export-add', 'arguments': {'type': 'nbd', 'id': 'e0', 'node-name': 'r0'}},
        {'execute': 'query-named-block-nodes'},
        {'execute': 'blockdev-del', 'arguments': {'node-name': 'd0'}})
    s['bare'] = qmp_session('{"execute":"query-version"}' * 3, caps=False)
    return s


# ---------------------------------------------------------------- backing-name

def backing_name():
    # The first byte picks the recorded format: 0 none, 1 raw, 2 qcow2, 3 rbd, 4 nbd, 5 file.
    seeds = [
        (3, 'rbd:rbd/base'),
        (1, 'rbd:pool/ns/img@snap1:conf=/etc/ceph/a\\:b.conf:id=admin'),
        (1, 'rbd:p\\/q/i\\@j:conf'),
        (3, 'json:{"pool": "rbd", "image": "base", "conf": "/etc/ceph/ceph.conf", "driver": "rbd"}'),
        (4, 'json:{"driver": "nbd", "server": {"type": "unix", "path": "/run/s"}}'),
        (1, 'json:{"driver": "nbd", "server.type": "inet", "server.host": "h", "server.port": "10809"}'),
        (0, 'json:{"driver": "raw", "file.driver": "nbd", "file": {"server.type": "unix"}, "file.server.path": "/s"}'),
        (2, 'json:{"driver": "qcow2", "file": {"driver": "file", "filename": "/b"}}'),
        (1, 'json:{"file": "x", "file.driver": "nbd", "driver": "raw"}'),
        (1, 'nbd+unix:///exp?socket=/run/s'),
        (1, 'nbd://example.com:10810/disk'),
        (1, 'nbds://h/x'),
        (1, 'https://example.com/base.img'),
    ]
    return {'seed-%02d' % i: bytes([f]) + s.encode() for i, (f, s) in enumerate(seeds)}


# ---------------------------------------------------------------- keyval

def keyval():
    seeds = [
        'driver=file,node-name=disk0,filename=/var/lib/images/disk0.img,read-only=on',
        'driver=qcow2,node-name=q0,file.driver=file,file.filename=a.qcow2,backing=null,cache-size=1M',
        'driver=raw,node-name=r0,file=f0,offset=4096,size=1G,discard=unmap',
        'driver=nbd,node-name=n0,server.type=unix,server.path=/run/x.sock,export=disk,tls-creds=tls0',
        'driver=nbdkit,node-name=k0,plugin=memory,args.size=1M,args.allocator=sparse',
        'driver=memory,node-name=m0,size=1.5G',
        'driver=null-co,node-name=z0,size=0x100000,read-zeroes=true',
        'type=nbd,id=e0,node-name=disk0,name=disk,writable=on,bitmaps.0=b0,bitmaps.1.node=n,'
        'bitmaps.1.name=b1,allocation-depth=on,description=a,,b',
        'addr.type=unix,addr.path=/tmp/nbd.sock,max-connections=4',
        'addr.type=inet,addr.host=127.0.0.1,addr.port=10809,tls-creds=tls0,tls-authz=auth0',
        'qom-type=tls-creds-x509,id=tls0,dir=/etc/pki/qemu,endpoint=server,verify-peer=off',
        'qom-type=authz-simple,id=auth0,identity=CN=client',
        'l.0=a,l.1.k=b,l.1.j.0=c,x.y.z=1',
        'a.1=x,a.0=y',
        '{"driver": "memory", "node-name": "m1", "size": "64M"}',
        '{"type": "nbd", "id": "e", "node-name": "n", "bitmaps": ["b0", {"node": "n", "name": "b"}]}',
        'a=1,,2,,,b=3,=4',
        'a.b=1,a=2',
    ]
    return {'seed-%02d' % i: s for i, s in enumerate(seeds)}


# ---------------------------------------------------------------- qcow2

def run(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def qcow2():
    if not shutil.which('qemu-img') or not shutil.which('qemu-io'):
        print('skipping qcow2: qemu-img/qemu-io are not installed')
        return None
    tmp = tempfile.mkdtemp(prefix='blockd-corpus.')
    s = {}
    try:
        # The backing files fuzz-qcow2.c provides next to the image.
        with open(os.path.join(tmp, 'backing.raw'), 'wb') as f:
            f.write(bytes((i // 512 + 1) & 0xff for i in range(256 * KiB)))
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512',
            os.path.join(tmp, 'backing.qcow2'), '1M')

        def img(name, opts, size='1M', io=(), truncate=None, patch=None):
            p = os.path.join(tmp, name)
            run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', opts, p, size)
            for c in io:
                run('qemu-io', '-f', 'qcow2', '-c', c, p)
            with open(p, 'rb') as f:
                data = bytearray(f.read())
            if truncate:
                data = data[:truncate]
            if patch:
                patch(data)
            s[name] = bytes(data)

        writes = ('write -P 0x11 0 4k', 'write -P 0x22 600k 1536', 'write -z 8k 4k', 'write -P 0x33 1020k 4k')
        img('v3-512-empty', 'cluster_size=512,compat=1.1')
        img('v3-512-data', 'cluster_size=512,compat=1.1', io=writes)
        img('v2-512-data', 'cluster_size=512,compat=0.10', io=writes)
        img('v3-1k-refcount1', 'cluster_size=1024,refcount_bits=1', io=writes[:2])
        img('v3-1k-refcount64', 'cluster_size=1024,refcount_bits=64', io=writes[:2])
        img('v3-512-lazy', 'cluster_size=512,lazy_refcounts=on', io=writes[:1])
        img('v3-64k-header', 'cluster_size=65536', size='64M', truncate=1024)
        img('v3-2m-header', 'cluster_size=2097152', size='1G', truncate=1024)
        img('v3-512-backing-raw', 'cluster_size=512,backing_file=backing.raw,backing_fmt=raw',
            size='256K', io=('write -P 0x44 1k 1k', 'write -z 64k 512'))
        img('v3-512-backing-qcow2', 'cluster_size=512,backing_file=backing.qcow2,backing_fmt=qcow2',
            io=('write -P 0x55 0 512',))

        def drop_backing_format(d):
            # Turns the backing format extension into an unknown one: the driver probes the file.
            i = bytes(d).find(struct.pack('>I', 0xe2792aca))
            d[i:i + 4] = struct.pack('>I', 0x12345678)
        img('v3-512-backing-probe', 'cluster_size=512,backing_file=backing.raw,backing_fmt=raw', size='256K',
            patch=drop_backing_format)

        def set_incompat(bit):
            def patch(d):
                d[72:80] = struct.pack('>Q', struct.unpack('>Q', bytes(d[72:80]))[0] | (1 << bit))
            return patch
        img('v3-512-corrupt-bit', 'cluster_size=512', io=writes[:1], patch=set_incompat(1))
        img('v3-512-dirty-bit', 'cluster_size=512', patch=set_incompat(0))

        p = os.path.join(tmp, 'snap')
        run('qemu-img', 'create', '-q', '-f', 'qcow2', '-o', 'cluster_size=512', p, '1M')
        run('qemu-io', '-f', 'qcow2', '-c', 'write -P 0x66 0 2k', p)
        run('qemu-img', 'snapshot', '-c', 's1', p)
        run('qemu-img', 'bitmap', '--add', p, 'bm0')
        with open(p, 'rb') as f:
            s['v3-512-snapshot-bitmap'] = f.read()

        raw = os.path.join(tmp, 'raw')
        with open(raw, 'wb') as f:
            f.write(b'compressible data ' * 4000)
            f.truncate(MiB)
        p = os.path.join(tmp, 'compressed')
        run('qemu-img', 'convert', '-q', '-c', '-f', 'raw', '-O', 'qcow2', '-o', 'cluster_size=4096', raw, p)
        with open(p, 'rb') as f:
            data = f.read()
        s['v3-4k-compressed'] = data[:32 * KiB]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return s


# ---------------------------------------------------------------- bitmap sidecars

def bitmap_store():
    from qmp_lib import Daemon, blockd_cmd
    tmp = tempfile.mkdtemp(prefix='blockd-corpus.')
    s = {}
    try:
        def make(name, size, bitmaps, writes, clean=True):
            image = os.path.join(tmp, name + '.img')
            with open(image, 'wb') as f:
                f.truncate(size)
            sock = os.path.join(tmp, 'nbd.sock')
            with Daemon(blockd_cmd(), extra=['--blockdev', 'driver=file,node-name=f0,filename=' + image,
                                             '--nbd-server', 'addr.type=unix,addr.path=' + sock]) as d:
                q = d.qmp()
                for b in bitmaps:
                    r = q.cmd('block-dirty-bitmap-add', dict(node='f0', persistent=True, **b))
                    assert r == {'return': {}}, r
                q.cmd('block-export-add', {'type': 'nbd', 'id': 'e0', 'node-name': 'f0', 'writable': True})
                import nbd
                h = nbd.NBD()
                h.connect_unix(sock)
                for off, length in writes:
                    h.pwrite(b'w' * length, off)
                h.shutdown()
                if clean:
                    d.stop()
                else:
                    d.proc.kill()
                    d.proc.wait()
                with open(image + '.bitmaps', 'rb') as f:
                    s[name] = f.read()

        make('one-clean', 256 * KiB, [{'name': 'b0', 'granularity': 4096}], [(0, 4096), (100000, 10)])
        make('three-clean', 192 * KiB, [{'name': 'p', 'granularity': 512},
                                        {'name': 'disabled', 'granularity': 65536, 'disabled': True},
                                        {'name': 'long-name-' + 'x' * 60, 'granularity': 1024}],
             [(512, 512), (64 * KiB, 70 * KiB)])
        make('unclean', 128 * KiB, [{'name': 'c', 'granularity': 512}], [(0, 1), (127 * KiB, 1024)], clean=False)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return s


# ---------------------------------------------------------------- dictionaries

def dict_entry(data):
    out = ''
    for b in data:
        c = chr(b)
        out += '\\' + c if c in '"\\' else c if 32 <= b < 127 else '\\x%02x' % b
    return '"%s"\n' % out


def write_dict(target, entries, comment):
    d = os.path.join(HERE, 'dict')
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, target + '.dict'), 'w') as f:
        f.write('# %s (tests/fuzz/make-corpus.py)\n' % comment)
        for e in entries:
            f.write(dict_entry(e if isinstance(e, bytes) else e.encode()))


def dictionaries():
    import glob
    import re
    names = set()
    for f in glob.glob(os.path.join(HERE, '..', '..', 'qapi', '*.json')):
        for m in re.finditer(r"'\*?([a-z][a-z0-9_-]*)'", open(f).read()):
            names.add(m.group(1))
    names -= {'command', 'data', 'struct', 'enum', 'union', 'alternate', 'base', 'discriminator', 'include',
              'returns', 'boxed', 'event', 'map', 'if', 'features', 'type', 'str', 'int', 'bool', 'size',
              'number', 'null', 'any', 'uint8', 'uint16', 'uint32', 'uint64', 'int8', 'int16', 'int32', 'int64'}
    names = sorted(names)
    write_dict('qmp', ['"%s"' % n for n in names] +
               ['"execute"', '"arguments"', '"id"', '"type"', '"data"', '{"execute": "qmp_capabilities"}',
                '"mem0"', '"null0"', '"memory"', '"null-co"', '"raw"', '"qcow2"', '"overlay"', '\\u0000'],
               'QMP names from qapi/*.json')
    write_dict('keyval', [n + '=' for n in names] + ['.0.', ',,', '{"', 'on', 'off', '1G', '0x'],
               'keys from qapi/*.json')
    write_dict('qcow2', [b'QFI\xfb', be32(0xe2792aca), be32(0x6803f857), be32(0x23852875), be32(0x0537be77),
                         be32(0x44415441), 'image.qcow2', 'backing.raw', 'backing.qcow2', 'qcow2', 'raw',
                         be64(1 << 63), be64(1 << 62), be64(1)],
               'qcow2 magic, header extensions, flags and the backing files next to the image')
    write_dict('backing-name', ['json:', 'rbd:', 'nbd+unix:///', 'nbd://', '"driver"', '"file"', '"server"',
                                '"rbd"', '"nbd"', '"raw"', '"qcow2"', '"unix"', 'conf=', 'id=', '\\:', '\\/', '\\@',
                                '.', '{', '}'],
               'backing file name prefixes, keys and escapes')
    write_dict('nbd-handshake', [b'IHAVEOPT', be32(0x25609513), be32(0x21e41c71), 'mem0', 'null0',
                                 'base:allocation', 'qemu:dirty-bitmap:b0', 'qemu:allocation-depth', 'qemu:'],
               'NBD magics, the exports and their meta contexts')


def main():
    targets = sys.argv[1:] or ['nbd-handshake', 'nbd-wire', 'qmp', 'keyval', 'qcow2', 'bitmap-store', 'backing-name',
                               'dict']
    for t in targets:
        if t == 'dict':
            dictionaries()
            continue
        if t == 'nbd-handshake':
            seeds = nbd_built()
            seeds.update(nbd_captured())
        elif t == 'nbd-wire':
            seeds = nbd_wire()
        elif t == 'qmp':
            seeds = qmp()
        elif t == 'keyval':
            seeds = keyval()
        elif t == 'qcow2':
            seeds = qcow2()
        elif t == 'bitmap-store':
            seeds = bitmap_store()
        elif t == 'backing-name':
            seeds = backing_name()
        else:
            sys.exit('unknown target %s' % t)
        if seeds is not None:
            write_seeds(t, seeds)


if __name__ == '__main__':
    main()
