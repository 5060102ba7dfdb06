"""Shared helpers for the TLS integration tests (not a test itself).

make_x509(dir) creates, with certtool, a CA and server/client certificates
laid out the way QEMU, libnbd and blockd expect:

    DIR/server/{ca-cert,server-cert,server-key}.pem   (cn=localhost)
    DIR/client/{ca-cert,client-cert,client-key}.pem   (C=GB,O=Example,CN=client1)
    DIR/client2/...                                   (C=GB,O=Example,CN=client2)
    DIR/rogue/...    a client certificate from another CA (CN=client1 too)

make_psk(dir, users) writes DIR/keys.psk (username:hexkey lines).

RawClient speaks the NBD handshake on a plain socket, so a test can check
the exact replies of a TLS-only server and wrap the socket in Python's ssl
after STARTTLS (that client always sends its certificate, unlike GnuTLS)."""

import os
import shutil
import socket
import ssl
import struct
import subprocess

from lib import skip, fail

NBDMAGIC = 0x4E42444D41474943
IHAVEOPT = 0x49484156454F5054
REP_MAGIC = 0x0003E889045565A9
OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_STARTTLS = 1, 2, 3, 5
OPT_INFO, OPT_GO, OPT_STRUCTURED_REPLY = 6, 7, 8
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_POLICY, REP_ERR_INVALID, REP_ERR_TLS_REQD = 0x80000002, 0x80000003, 0x80000005

CLIENT1_DN = 'C=GB,O=Example,CN=client1'
CLIENT2_DN = 'C=GB,O=Example,CN=client2'


def certtool(*args):
    r = subprocess.run(['certtool'] + list(args), stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, universal_newlines=True)
    if r.returncode != 0:
        fail('certtool %s failed: %s' % (' '.join(args), r.stdout))


def _template(path, lines):
    with open(path, 'w') as f:
        f.write('\n'.join(lines) + '\n')


def _make_ca(work, name):
    key = os.path.join(work, name + '-key.pem')
    cert = os.path.join(work, name + '-cert.pem')
    tmpl = os.path.join(work, name + '.info')
    _template(tmpl, ['cn = "%s"' % name, 'ca', 'cert_signing_key', 'expiration_days = 30'])
    certtool('--generate-privkey', '--outfile', key)
    certtool('--generate-self-signed', '--load-privkey', key, '--template', tmpl,
             '--outfile', cert)
    return key, cert


def _make_cert(work, ca, outdir, role, lines):
    os.makedirs(outdir, exist_ok=True)
    ca_key, ca_cert = ca
    key = os.path.join(outdir, role + '-key.pem')
    cert = os.path.join(outdir, role + '-cert.pem')
    tmpl = os.path.join(work, os.path.basename(outdir) + '.info')
    _template(tmpl, lines + ['encryption_key', 'signing_key', 'expiration_days = 30'])
    certtool('--generate-privkey', '--outfile', key)
    certtool('--generate-certificate', '--load-privkey', key, '--load-ca-certificate', ca_cert,
             '--load-ca-privkey', ca_key, '--template', tmpl, '--outfile', cert)
    shutil.copy(ca_cert, os.path.join(outdir, 'ca-cert.pem'))


def make_x509(base):
    """Creates the X.509 fixture directories under base; returns base."""
    if not shutil.which('certtool'):
        skip('certtool (gnutls-bin) is not installed')
    work = os.path.join(base, 'ca')
    os.makedirs(work, exist_ok=True)
    ca = _make_ca(work, 'testca')
    rogue_ca = _make_ca(work, 'rogueca')
    _make_cert(work, ca, os.path.join(base, 'server'), 'server',
               ['organization = "Example"', 'cn = "localhost"', 'dns_name = "localhost"',
                'ip_address = "127.0.0.1"', 'tls_www_server'])
    for name, ca_used, cn in (('client', ca, 'client1'), ('client2', ca, 'client2'),
                              ('rogue', rogue_ca, 'client1')):
        _make_cert(work, ca_used, os.path.join(base, name), 'client',
                   ['country = "GB"', 'organization = "Example"', 'cn = "%s"' % cn,
                    'tls_www_client'])
    return base


def make_psk(directory, users):
    """Writes directory/keys.psk for {username: hexkey}; returns its path."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, 'keys.psk')
    with open(path, 'w') as f:
        for user, key in users.items():
            f.write('%s:%s\n' % (user, key))
    return path


class RawClient:
    """The fixed-newstyle handshake on a raw socket (Unix path or (host, port))."""

    def __init__(self, address, timeout=20):
        family = socket.AF_UNIX if isinstance(address, str) else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        magic, opt, flags = struct.unpack('>QQH', self.recv_exact(18))
        if magic != NBDMAGIC or opt != IHAVEOPT:
            fail('bad greeting')
        self.sock.sendall(struct.pack('>I', 3))  # FIXED_NEWSTYLE | NO_ZEROES

    def recv_exact(self, n):
        buf = b''
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError('server closed the connection')
            buf += chunk
        return buf

    def send_option(self, opt, data=b''):
        self.sock.sendall(struct.pack('>QII', IHAVEOPT, opt, len(data)) + data)

    def option(self, opt, data=b''):
        """Sends an option; returns [(reply type, data)] up to the final reply."""
        self.send_option(opt, data)
        replies = []
        while True:
            magic, ropt, rtype, rlen = struct.unpack('>QIII', self.recv_exact(20))
            if magic != REP_MAGIC or ropt != opt:
                fail('bad option reply magic or option %#x/%d' % (magic, ropt))
            replies.append((rtype, self.recv_exact(rlen)))
            if rtype != REP_SERVER and rtype != REP_INFO:
                return replies

    def at_eof(self):
        try:
            return self.sock.recv(1) == b''
        except (ConnectionResetError, ssl.SSLError, OSError):
            return True

    def starttls(self, certdir=None, server_hostname='localhost'):
        """STARTTLS, then a TLS handshake with Python's ssl (client cert from certdir)."""
        rep = self.option(OPT_STARTTLS)
        if rep[-1][0] != REP_ACK:
            fail('STARTTLS refused: %#x' % rep[-1][0])
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        if certdir:
            ctx.load_cert_chain(os.path.join(certdir, 'client-cert.pem'),
                                os.path.join(certdir, 'client-key.pem'))
        self.sock = ctx.wrap_socket(self.sock, server_hostname=server_hostname)

    def close(self):
        self.sock.close()


def go_data(name):
    """NBD_OPT_INFO/GO data for export `name`, no info requests."""
    n = name.encode()
    return struct.pack('>I', len(n)) + n + struct.pack('>H', 0)
