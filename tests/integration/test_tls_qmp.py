#!/usr/bin/python3
"""object-add / object-del and nbd-server-start with tls-creds over QMP:
clear errors for missing, unreadable and mismatched credential files and
wrong object types; object-del refuses credentials and authz objects the
running server uses (QEMU 7.2 deletes them) and succeeds once it stopped;
query-qmp-schema describes object-add's types."""
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check
from tls_lib import certtool, make_x509, make_psk


def error_of(r):
    check('error' in r, 'expected an error, got %r' % r)
    return r['error']['desc']


def main():
    fix = make_x509(tempfile.mkdtemp(prefix='blockd-tls.'))
    try:
        make_psk(os.path.join(fix, 'psk'), {'alice': os.urandom(16).hex()})
        empty = os.path.join(fix, 'empty')
        os.makedirs(empty)
        mismatched = os.path.join(fix, 'mismatched')
        shutil.copytree(os.path.join(fix, 'server'), mismatched)
        shutil.copy(os.path.join(fix, 'client', 'client-key.pem'),
                    os.path.join(mismatched, 'server-key.pem'))
        # A server certificate that expired in 2020, and one from another CA.
        expired = os.path.join(fix, 'expired')
        shutil.copytree(os.path.join(fix, 'server'), expired)
        tmpl = os.path.join(fix, 'expired.info')
        with open(tmpl, 'w') as f:
            f.write('cn = "localhost"\ntls_www_server\nencryption_key\nsigning_key\n'
                    'activation_date = "2019-01-01 00:00:00"\n'
                    'expiration_date = "2020-01-01 00:00:00"\n')
        certtool('--generate-certificate', '--load-privkey', os.path.join(expired, 'server-key.pem'),
                 '--load-ca-certificate', os.path.join(fix, 'ca', 'testca-cert.pem'),
                 '--load-ca-privkey', os.path.join(fix, 'ca', 'testca-key.pem'),
                 '--template', tmpl, '--outfile', os.path.join(expired, 'server-cert.pem'))
        foreign = os.path.join(fix, 'foreign')
        shutil.copytree(os.path.join(fix, 'server'), foreign)
        shutil.copy(os.path.join(fix, 'rogue', 'ca-cert.pem'), os.path.join(foreign, 'ca-cert.pem'))
        with Daemon(blockd_cmd()) as d:
            q = d.qmp()
            x509 = {'qom-type': 'tls-creds-x509', 'id': 'tls0', 'endpoint': 'server',
                    'dir': os.path.join(fix, 'server'), 'verify-peer': True}

            r = q.cmd('object-add', dict(x509, dir=empty))
            check('Unable to access credentials %s/ca-cert.pem: No such file or directory' % empty
                  in error_of(r), 'missing CA file: %r' % r)
            r = q.cmd('object-add', dict(x509, dir=mismatched))
            check(mismatched in error_of(r), 'mismatched key accepted or unclear: %r' % r)
            if os.geteuid() != 0:
                unreadable = os.path.join(fix, 'unreadable')
                shutil.copytree(os.path.join(fix, 'server'), unreadable)
                os.chmod(os.path.join(unreadable, 'server-key.pem'), 0)
                r = q.cmd('object-add', dict(x509, dir=unreadable))
                check('Permission denied' in error_of(r), 'unreadable key: %r' % r)
            r = q.cmd('object-add', dict(x509, dir=expired))
            check('The certificate %s/server-cert.pem has expired' % expired in error_of(r),
                  'expired certificate: %r' % r)
            r = q.cmd('object-add', dict(x509, dir=expired, **{'sanity-check': False}))
            check(r == {'return': {}} and q.cmd('object-del', {'id': 'tls0'}) == {'return': {}},
                  'sanity-check=off did not load the expired certificate: %r' % r)
            r = q.cmd('object-add', dict(x509, dir=foreign))
            check('is not signed by the CA' in error_of(r), 'certificate from another CA: %r' % r)
            r = q.cmd('object-add', {'qom-type': 'tls-creds-psk', 'id': 'p0', 'endpoint': 'server',
                                     'dir': empty})
            check('keys.psk' in error_of(r), 'missing keys.psk: %r' % r)
            r = q.cmd('object-add', {'qom-type': 'iothread', 'id': 'io0'})
            check("Parameter 'qom-type' does not accept value 'iothread'" in error_of(r), repr(r))

            check(q.cmd('object-add', x509) == {'return': {}}, 'object-add x509 failed')
            r = q.cmd('object-add', x509)
            check("duplicate property 'tls0'" in error_of(r), 'duplicate id: %r' % r)
            check(q.cmd('object-add', {'qom-type': 'tls-creds-psk', 'id': 'tlsc',
                                       'dir': os.path.join(fix, 'psk'), 'endpoint': 'client',
                                       'username': 'alice'}) == {'return': {}}, 'psk client')
            check(q.cmd('object-add', {'qom-type': 'authz-simple', 'id': 'auth0',
                                       'identity': 'C=GB,O=Example,CN=client1'}) == {'return': {}},
                  'authz-simple')

            addr = {'type': 'unix', 'data': {'path': d.path('nbd.sock')}}
            r = q.cmd('nbd-server-start', {'addr': addr, 'tls-creds': 'nosuch'})
            check("No TLS credentials with id 'nosuch'" in error_of(r), repr(r))
            r = q.cmd('nbd-server-start', {'addr': addr, 'tls-creds': 'tlsc'})
            check('Expecting TLS credentials with a server endpoint' in error_of(r), repr(r))
            r = q.cmd('nbd-server-start', {'addr': addr, 'tls-creds': 'auth0'})
            check('is not TLS credentials' in error_of(r), repr(r))
            r = q.cmd('nbd-server-start', {'addr': addr, 'tls-creds': 'tls0', 'tls-authz': 'tls0'})
            check('QAuthZ' in error_of(r), repr(r))
            # Failed starts hold nothing.
            check(q.cmd('object-del', {'id': 'tlsc'}) == {'return': {}}, 'object-del tlsc')

            r = q.cmd('nbd-server-start', {'addr': addr, 'tls-creds': 'tls0', 'tls-authz': 'auth0'})
            check(r == {'return': {}}, 'nbd-server-start with TLS: %r' % r)
            for obj in ('tls0', 'auth0'):
                r = q.cmd('object-del', {'id': obj})
                check('in use' in error_of(r), 'object-del of %s under a running server: %r' % (obj, r))
            r = q.cmd('object-del', {'id': 'nosuch'})
            check("object 'nosuch' not found" in error_of(r), repr(r))
            check(q.cmd('nbd-server-stop') == {'return': {}}, 'nbd-server-stop')
            for obj in ('tls0', 'auth0'):
                check(q.cmd('object-del', {'id': obj}) == {'return': {}}, 'object-del %s after stop' % obj)

            schema = q.cmd('query-qmp-schema')['return']
            by_name = {e['name']: e for e in schema}
            check('object-add' in by_name and 'object-del' in by_name, 'object-* not in the schema')
            arg = by_name[by_name['object-add']['arg-type']]
            check(arg.get('tag') == 'qom-type', 'ObjectOptions tag: %r' % arg)
            cases = {v['case']: by_name[v['type']] for v in arg['variants']}
            check(set(cases) == {'authz-simple', 'secret', 'tls-creds-psk', 'tls-creds-x509'}, repr(cases))
            x509_members = {m['name'] for m in cases['tls-creds-x509']['members']}
            check({'dir', 'endpoint', 'verify-peer', 'priority', 'sanity-check'} <= x509_members,
                  repr(x509_members))
            start = by_name[by_name['nbd-server-start']['arg-type']]
            check({'tls-creds', 'tls-authz'} <= {m['name'] for m in start['members']},
                  'nbd-server-start lacks tls members')
            q.cmd('quit')
            check(d.wait() == 0, 'blockd did not exit cleanly')
    finally:
        shutil.rmtree(fix, ignore_errors=True)


main()
