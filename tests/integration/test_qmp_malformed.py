#!/usr/bin/python3
"""Bad input on the monitor: 1000 malformed or random messages each get a QMP
error (or are waited on as incomplete) and the monitor keeps working; an
oversized message is refused; a client that disconnects mid-message does not
disturb another monitor; \\u0000 in a string is refused (a C string would end
there); a burst of 64 simultaneous connects is accepted; nothing leaks
(ASan/LSan at exit)."""
import json
import os
import random
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check

FIXED = [
    ('{"execute": }', 'JSON parse error'),
    ('[1, 2]', 'QMP input must be a JSON object'),
    ('"just a string"', 'QMP input must be a JSON object'),
    ('{"arguments": {}}', "QMP input lacks member 'execute'"),
    ('{"execute": "query-version", "foo": 1}', "QMP input member 'foo' is unexpected"),
    ('{"execute": ["x"]}', "QMP input member 'execute' must be a string"),
    ('{"execute": "query-version", "arguments": null}', "QMP input member 'arguments' must be an object"),
    ('{"execute": "nope"}', 'The command nope has not been found'),
    ('{"execute": "blockdev-del"}', "Parameter 'node-name' is missing"),
    ('{"execute": "blockdev-del", "arguments": {"node-name": []}}',
     "Invalid parameter type for 'node-name', expected: string"),
    ('{"execute": "nbd-server-start", "arguments": {"addr": {"type": "carrier-pigeon"}}}',
     "Parameter 'type' does not accept value 'carrier-pigeon'"),
    ('}', 'JSON parse error'),
]


def random_message(rng):
    """Garbage that is a complete JSON value or a complete bracketed fragment."""
    kind = rng.randrange(6)
    if kind == 0:   # valid JSON of the wrong shape
        return json.dumps(rng.choice([1, 'x', [None], True, {'a': [1, {'b': 2}]}]))
    if kind == 1:   # an object with random members
        return json.dumps({rng.choice(['execute', 'arguments', 'id', 'zz']): rng.choice([1, 'query-version', {}, []])
                           for _ in range(rng.randrange(1, 4))})
    if kind == 2:   # random commands with random arguments
        return json.dumps({'execute': rng.choice(['blockdev-add', 'block-export-add', 'nbd-server-start',
                                                  'query-named-block-nodes', 'blockdev-del']),
                           'arguments': {rng.choice(['driver', 'node-name', 'addr', 'flat', 'size', 'id']):
                                         rng.choice([None, 1, -1, 2 ** 40, 'null-co', [], {}, {'type': 'unix'}])}})
    if kind == 3:   # broken tokens inside balanced braces
        return '{' + ''.join(rng.choice('abc:,1"\\ntf') for _ in range(rng.randrange(1, 30))).replace('"', '') + '}'
    if kind == 4:   # random bytes, braces balanced and quotes removed
        body = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 50))).decode()
        body = body.replace('"', '').replace('{', '').replace('}', '').replace('[', '').replace(']', '')
        return '{' + body + '}'
    return '{"execute": "query-version", "id": %d, "arguments": {"x": "\\u00e9\\ud800"}}' % rng.randrange(100)


def main():
    rng = random.Random(1234)
    with Daemon(blockd_cmd(), monitors=2) as d:
        q = d.qmp(0)
        other = d.qmp(1)
        for text, want in FIXED:
            r = q.raw(text)
            check('error' in r and want in r['error']['desc'], '%s: got %r, want %r' % (text, r, want))
        sent = len(FIXED)
        while sent < 1000:
            r = q.raw(random_message(rng) + "\n")  # a bare number ends at a delimiter
            check('error' in r or 'return' in r, 'odd reply %r' % r)
            if 'error' in r:
                check(r['error']['class'] in ('GenericError', 'CommandNotFound'), 'class in %r' % r)
            sent += 1
        # A message over 1 MiB is refused, and the stream recovers after it.
        q.send_raw('{"execute": "query-version", "arguments": {"pad": "' + 'x' * (1 << 20) + '"}}')
        r = q.reply()
        check('error' in r and 'too large' in r['error']['desc'], 'oversized message: %r' % r)
        # Deep nesting is refused without crashing the parser.
        r = q.raw('[' * 5000 + ']' * 5000)
        check('error' in r, 'deep nesting: %r' % r)
        # Two messages in one write, and one split over two writes.
        q.send_raw('{"execute": "query-version", "id": 1}{"execute": "query-version", "id": 2}')
        check(q.reply().get('id') == 1 and q.reply().get('id') == 2, 'pipelined messages')
        q.send_raw('{"execute": "query-ver')
        r = q.raw('sion", "id": 3}')
        check(r.get('id') == 3 and 'return' in r, 'split message: %r' % r)
        # A client that vanishes mid-message disturbs no one.
        from qmp_lib import Qmp
        for _ in range(5):
            gone = Qmp(d.socks[0])
            gone.send_raw('{"execute": "blockdev-add", "arguments": {"driver": "null-')
            gone.close()
        r = other.cmd('blockdev-add', {'driver': 'null-co', 'node-name': 'after'})
        check(r == {'return': {}}, 'other monitor after disconnects: %r' % r)
        r = q.cmd('query-named-block-nodes')
        check([n['node-name'] for n in r['return']] == ['after'], 'normal command afterwards: %r' % r)
        # U+0000 in a string would cut C strings short: "after\u0000zz"
        # must not name (and delete) the node "after".
        r = q.raw('{"execute": "blockdev-del", "arguments": {"node-name": "after\\u0000zz"}}')
        check(r.get('error', {}).get('desc') == 'JSON parse error, \\u0000 is not supported',
              '\\u0000 in a name: %r' % r)
        r = q.cmd('query-named-block-nodes')
        check([n['node-name'] for n in r['return']] == ['after'], 'node deleted through a \\u0000 name: %r' % r)
        # A burst of simultaneous connects is queued, not refused (listen backlog).
        import socket
        burst = []
        for _ in range(64):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.setblocking(False)
            try:
                c.connect(d.socks[1])
            except BlockingIOError as e:
                check(False, 'connect %d of a burst of 64 refused: %s' % (len(burst) + 1, e))
            burst.append(c)
        for c in burst:
            c.setblocking(True)
            c.settimeout(20)
            greeting = json.loads(c.makefile().readline())
            check('QMP' in greeting, 'burst connection greeting: %r' % greeting)
            c.close()
        q.close()
        other.close()
        check(d.stop() == 0, 'blockd did not exit cleanly')
    print('1000 bad messages answered; monitor still works')


main()
