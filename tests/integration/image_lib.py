"""Differential QMP scripts for the image commands (blockdev-create,
block_resize, change-backing-file, query-block): the same steps against
qemu-storage-daemon and blockd, each in its own directory, results with
the directory replaced by $T so they compare.

A step is a command (name, arguments) or one of
  ('sh', CMD)        a shell command whose output is compared (qemu-img ...)
  ('wait-job', ID)   wait until job ID is concluded (polls query-jobs), then
                     record its JOB_STATUS_CHANGE statuses so far, in order
                     (('wait-job', ID, False): waited for, not compared)
Arguments and shell commands may use $T, the daemon's directory."""
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), 'qmp'))
from qmp_lib import Daemon, blockd_cmd, check, fail, qsd_cmd  # noqa: E402,F401


def job_statuses(q, job_id):
    """Polls query-jobs until the job is concluded; its statuses from the events, in order."""
    while True:
        jobs = {j['id']: j for j in q.cmd('query-jobs')['return']}
        if job_id not in jobs:
            fail('job %s is not listed' % job_id)
        if jobs[job_id]['status'] == 'concluded':
            break
        time.sleep(0.02)
    q.cmd('query-version')  # every event emitted so far has arrived before this reply
    return [e['data']['status'] for e in q.events
            if e['event'] == 'JOB_STATUS_CHANGE' and e['data']['id'] == job_id]


def run_script(cmd, tmp, steps, names=None):
    """The results of `steps` against the daemon `cmd`, with `tmp` shown as
    $T; `names` maps more placeholders to this daemon's values (names of
    images both create in one Ceph cluster), shown as the placeholders."""
    out = []
    names = dict(names or {}, **{'$T': tmp})

    def subst(text):
        for k, v in names.items():
            text = text.replace(k, v)
        return text

    def norm(x):
        text = json.dumps(x) if not isinstance(x, str) else x
        for k, v in names.items():
            text = text.replace(v, k)
        return json.loads(text) if not isinstance(x, str) else text
    with Daemon(cmd) as d:
        q = d.qmp()
        for step in steps:
            if step[0] == 'sh':
                r = subprocess.run(subst(step[1]), shell=True, capture_output=True, text=True)
                out.append((step, norm(r.stdout + r.stderr)))
            elif step[0] == 'wait-job':
                out.append((step, job_statuses(q, step[1])))
            elif step[0] == 'wait-export-gone':
                # block-export-del answers at once; the export goes when its
                # last client has gone (BLOCK_EXPORT_DELETED), which a daemon
                # slowed down (TSan) may see after its next command.
                deadline = time.monotonic() + 30
                while any(e['id'] == step[1] for e in q.cmd('query-block-exports')['return']):
                    if time.monotonic() > deadline:
                        fail('export %s was not deleted' % step[1])
                    time.sleep(0.02)
                out.append((step, True))
            else:
                args = json.loads(subst(json.dumps(step[1])))
                r = q.cmd(step[0], args)
                out.append((step, norm(r['return'] if 'return' in r else
                                       {'class': r['error']['class'], 'desc': r['error']['desc']})))
        q.close()
        d.stop()
    return out


def differential(steps, skip_compare=(), names_qsd=None, names_ours=None):
    """Runs `steps` against both daemons; fails listing every step whose
    result differs (steps named in skip_compare are not compared).
    Returns blockd's results and the number of refusals compared."""
    import tempfile
    with tempfile.TemporaryDirectory() as t1, tempfile.TemporaryDirectory() as t2:
        qsd = run_script(qsd_cmd(), t1, steps, names_qsd)
        ours = run_script(blockd_cmd(), t2, steps, names_ours)
    bad = refusals = 0
    for (step, want), (_, got) in zip(qsd, ours):
        if step[0] in skip_compare or (step[0] == 'wait-job' and len(step) > 2 and not step[2]):
            continue
        if want != got:
            bad += 1
            print('MISMATCH %s\n  qemu-storage-daemon: %r\n  blockd:              %r' % (json.dumps(step), want, got))
        elif isinstance(want, dict) and 'class' in want and 'desc' in want:
            refusals += 1
    check(len(qsd) == len(ours), 'different step counts')
    if bad:
        fail('%d of %d steps differ from qemu-storage-daemon' % (bad, len(qsd)))
    return ours, refusals
