"""A throw-away single-node Ceph cluster for the rbd driver's tests.

    from ceph_lib import Cluster
    with Cluster() as c:                       # one monitor + one OSD, pool 'rbd'
        c.rbd('create', 'rbd/img', '--size', '64M')
        q.cmd('blockdev-add', c.node('r0', 'img'))
        qemu_img_uri = c.uri('img')           # rbd:rbd/img:conf=...
    # the cluster is stopped (by PID, in the script) and its directory removed

The cluster comes from ceph-single-node.sh (a copy of the project's
shared/tools script; memstore, 127.0.0.1 only, about 5 s to start).  A test
skips (exit 77) with the reason printed when the Ceph packages are not
installed or blockd was built without librbd; everything else is a failure.
Keyword arguments set the script's knobs (CEPH_AUTH='cephx',
CEPH_WATCH_TIMEOUT='10', ...).  pause_osd()/resume_osd() stop and continue
the OSD with SIGSTOP/SIGCONT: an outage that keeps the data (a memstore OSD
that is killed loses it).
"""

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from lib import blockd_path, fail, skip  # noqa: E402

# The project's shared tool when this checkout sits next to it; the
# identical copy kept here otherwise (a clean clone in CI).
SHARED_SCRIPT = os.path.join(HERE, '..', '..', '..', 'shared', 'tools', 'ceph-single-node.sh')
SCRIPT = SHARED_SCRIPT if os.path.exists(SHARED_SCRIPT) else os.path.join(HERE, 'ceph-single-node.sh')
NEEDED = ('ceph-mon', 'ceph-osd', 'ceph', 'rbd', 'rados', 'monmaptool', 'uuidgen')


def require_rbd():
    """Skips the test unless Ceph's daemons and tools are installed and blockd has the rbd driver."""
    missing = [p for p in NEEDED if not shutil.which(p)]
    if missing:
        skip('Ceph is not installed (missing %s; scripts/install-deps.sh installs it)' % ', '.join(missing))
    p = subprocess.run(['ldd', blockd_path()], capture_output=True, text=True)
    if p.returncode != 0:
        fail('cannot inspect %s: %s' % (blockd_path(), p.stderr.strip()))
    if 'librbd' not in p.stdout:
        skip('blockd was built without librbd (install librbd-dev, then reconfigure: meson setup --reconfigure)')


def require_qemu_rbd():
    """Skips the test unless QEMU's rbd driver (qemu-block-extra) is installed: the oracle."""
    if not shutil.which('qemu-storage-daemon') or not shutil.which('qemu-img'):
        skip('qemu-storage-daemon or qemu-img is not installed')
    if not glob.glob('/usr/lib/*/qemu/block-rbd.so') and not glob.glob('/usr/lib/qemu/block-rbd.so'):
        skip("QEMU's rbd driver is not installed (qemu-block-extra; scripts/install-deps.sh installs it)")


class Cluster:
    def __init__(self, qemu=False, **knobs):
        """qemu: the test also needs QEMU's rbd driver."""
        require_rbd()
        if qemu:
            require_qemu_rbd()
        self.knobs = knobs
        self.dir = None
        self.env = {}

    def start(self):
        self.dir = tempfile.mkdtemp(prefix='blockd-ceph.')
        env = dict(os.environ)
        env.update({k: str(v) for k, v in self.knobs.items()})
        p = subprocess.run(['bash', SCRIPT, 'start', self.dir], env=env, capture_output=True, text=True,
                           timeout=180)
        if p.returncode != 0:
            fail('the Ceph cluster did not start:\n' + p.stderr[-3000:])
        for line in p.stdout.splitlines():
            key, _, value = line.partition('=')
            if key.startswith('CEPH_'):
                self.env[key] = value
        self.conf = self.env['CEPH_CONF']
        self.osd_pid = int(self.env['CEPH_OSD_PID'])
        self.mon_pid = int(self.env['CEPH_MON_PID'])
        return self

    def stop(self):
        if self.dir and os.path.isdir(self.dir):
            self.resume_osd()
            subprocess.run(['bash', SCRIPT, 'stop', self.dir], capture_output=True, timeout=60)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False

    def rbd(self, *args, check=True):
        """Runs the rbd tool on this cluster; its stdout."""
        p = subprocess.run(['rbd', '-c', self.conf] + list(args), capture_output=True, text=True, timeout=120)
        if check and p.returncode != 0:
            fail('rbd %s: %s' % (' '.join(args), p.stderr.strip()))
        return p.stdout

    def ceph(self, *args):
        """Runs the ceph tool (bounded: mgr-only commands hang here)."""
        p = subprocess.run(['ceph', '-c', self.conf, '--connect-timeout', '20'] + list(args),
                           capture_output=True, text=True, timeout=60)
        if p.returncode != 0:
            fail('ceph %s: %s' % (' '.join(args), p.stderr.strip()))
        return p.stdout

    def conf_with(self, name, **client_options):
        """A copy of ceph.conf with extra [client] options (rados_osd_op_timeout=5, ...)."""
        path = os.path.join(self.dir, name)
        with open(self.conf) as f:
            text = f.read()
        extra = ''.join('%s = %s\n' % (k.replace('_', ' '), v) for k, v in client_options.items())
        with open(path, 'w') as f:
            f.write(text.replace('[client]\n', '[client]\n' + extra))
        return path

    def node(self, name, image, conf=None, **extra):
        """blockdev-add arguments of an rbd node on this cluster."""
        args = {'driver': 'rbd', 'node-name': name, 'pool': 'rbd', 'image': image, 'conf': conf or self.conf}
        args.update(extra)
        return args

    def uri(self, image, pool='rbd'):
        """QEMU's legacy file name of an image (qemu-img, qemu-io)."""
        return 'rbd:%s/%s:conf=%s' % (pool, image, self.conf)

    def pause_osd(self):
        """Stops the OSD (SIGSTOP).  Keep stops well under 16 s: past the PGs'
        read lease (0.8 x osd_heartbeat_grace) a continued OSD's PGs wait
        "for readable" until they peer again, which nothing triggers in a
        one-OSD cluster; resume_osd then marks the OSD down to force it."""
        self.paused_at = time.monotonic()
        os.kill(self.osd_pid, signal.SIGSTOP)

    def resume_osd(self):
        try:
            os.kill(self.osd_pid, signal.SIGCONT)
        except (OSError, AttributeError):
            return
        paused_at, self.paused_at = getattr(self, 'paused_at', None), None
        if paused_at and time.monotonic() - paused_at > 12:
            self.ceph('osd', 'down', '0')
            deadline = time.monotonic() + 60
            while '"num_up_osds":1,' not in self.ceph('osd', 'stat', '-f', 'json').replace(' ', ''):
                if time.monotonic() > deadline:
                    fail('the OSD did not come back up after a long pause')
                time.sleep(0.5)

    def export(self, image):
        """The image's bytes (rbd export to a file)."""
        path = os.path.join(self.dir, 'export-' + image)
        if os.path.exists(path):
            os.unlink(path)
        self.rbd('export', 'rbd/' + image, path)
        with open(path, 'rb') as f:
            data = f.read()
        os.unlink(path)
        return data
