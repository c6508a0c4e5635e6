#!/usr/bin/env python3
"""Attacks on the sandbox, each tried for real. tests/security.rs runs each first
outside phasebox, as the control (there it must get through), then inside.

    attack.py ATTACK ARG...

Prints one line, "escaped: ..." or "blocked: ...", and exits 0 when the attack got
through, 3 when it was stopped, 2 when it could not even be tried.
"""

import os


def descriptors():
    """This process's open descriptors and what each refers to."""
    found = {}
    # Listing the directory opens one more, which is gone by the time it is read.
    for fd in sorted(int(fd) for fd in os.listdir("/proc/self/fd")):
        try:
            found[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
    return found


# What the process started with, read before anything else is imported: on Python
# 3.14 (Debian forky) importing ctypes opens libffi.so for its trampolines, a
# descriptor of the interpreter's own, not an inherited one.
INHERITED = descriptors()

import ctypes  # noqa: E402
import fcntl  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402
import termios  # noqa: E402
import time  # noqa: E402

ESCAPED, BLOCKED, ERROR = 0, 3, 2


def verdict(escaped, what):
    print(("escaped: " if escaped else "blocked: ") + what, flush=True)
    sys.exit(ESCAPED if escaped else BLOCKED)


def tiocsti(text):
    """Push TEXT into the input of the terminal on descriptor 0."""
    try:
        for byte in text.encode():
            fcntl.ioctl(0, termios.TIOCSTI, bytes([byte]))
    except OSError as error:
        verdict(False, f"TIOCSTI: {error.strerror}")
    verdict(True, f"pushed {text!r} into the terminal")


def tcp(host, port):
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        verdict(False, f"TCP {host}:{port}: {error.strerror}")
    verdict(True, f"connected to TCP {host}:{port}")


def abstract(name):
    try:
        socket.socket(socket.AF_UNIX).connect("\0" + name)
    except OSError as error:
        verdict(False, f"abstract socket {name}: {error.strerror}")
    verdict(True, f"connected to abstract socket {name}")


LIBC = ctypes.CDLL(None, use_errno=True)


def mq_name(name):
    """Open a POSIX message queue by name."""
    fd = LIBC.mq_open(("/" + name).encode(), os.O_RDWR, 0, None)
    if fd < 0:
        verdict(False, f"mq_open /{name}: {os.strerror(ctypes.get_errno())}")
    verdict(True, f"opened message queue /{name}")


def opened(path, what):
    try:
        with open(path, "rb") as file:
            file.read()
    except OSError as error:
        verdict(False, f"{what} {path}: {error.strerror}")
    verdict(True, f"read {what} {path}")


def mq_path(path):
    """Open a message queue through an mqueue filesystem, not by name."""
    opened(path, "message queue")


def shm_path(name):
    """Read a POSIX shared memory object (or semaphore) through /dev/shm."""
    opened("/dev/shm/" + name, "shared memory")


def sysv(kind, ident):
    """Look at a System V IPC object by its id."""
    ident = int(ident)
    if kind == "shm":
        result = LIBC.shmat(ident, None, 0)
        failed = ctypes.c_void_p(result).value in (None, ctypes.c_void_p(-1).value)
    elif kind == "sem":
        failed = LIBC.semctl(ident, 0, 12) < 0  # GETVAL
    else:
        buffer = ctypes.create_string_buffer(256)
        failed = LIBC.msgctl(ident, 2, buffer) < 0  # IPC_STAT
    if failed:
        verdict(False, f"SysV {kind} {ident}: {os.strerror(ctypes.get_errno())}")
    verdict(True, f"reached SysV {kind} {ident}")


def pid(number):
    """See and signal a process of the host by its PID."""
    number = int(number)
    try:
        os.kill(number, 0)
    except ProcessLookupError as error:
        verdict(False, f"PID {number}: {error.strerror}")
    except PermissionError:
        verdict(True, f"PID {number} exists here (not permitted to signal it)")
    verdict(True, f"PID {number} can be signalled")


def proc_door():
    """Look for a descriptor, held by any process in sight, that opens a /proc of
    another PID namespace: through it, other namespaces and memory are reachable.
    Such a /proc's PID 1 is another process than this namespace's."""
    def first(path):
        with open(path) as file:
            stat = file.read()
        return stat[stat.rindex(")") + 2 :].split()[19]  # the start time
    own = first("/proc/1/stat")
    for process in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{process}/fd")
        except OSError:
            continue
        for fd in fds:
            door = f"/proc/{process}/fd/{fd}"
            try:
                if os.path.isdir(door) and first(f"{door}/1/stat") != own:
                    verdict(True, f"{door} is another namespace's /proc, whose PID 1 is not ours")
            except (OSError, ValueError, IndexError):
                continue
    verdict(False, "no descriptor of another namespace's /proc in sight")


def fds(*allowed):
    """Descriptors this process was started with beyond those ALLOWED."""
    allowed = {int(a) for a in allowed}
    extra = {fd: target for fd, target in INHERITED.items() if fd not in allowed}
    if extra:
        verdict(True, f"inherited descriptors {extra}")
    verdict(False, f"only descriptors {sorted(allowed)}")


def survive(marker):
    """Leave `sleep MARKER` processes behind in three ways: a double fork, a new
    session, and a PID namespace of their own (in a user namespace of its own, so
    that unprivileged callers can make one too)."""
    quiet = ">/dev/null 2>&1 </dev/null"
    os.system(f"( sleep {marker} {quiet} & ) ")
    os.system(f"setsid sleep {marker} {quiet} &")
    os.system(f"unshare --user --pid --fork sleep {marker} {quiet} &")
    # Each must have started before this returns: wait for all three, 10 s at most.
    deadline = time.monotonic() + 10
    while sum(1 for line in os.popen(f"pgrep -f '^sleep {marker}'")) < 3:
        if time.monotonic() > deadline:
            print("attack.py survive: the three sleep processes did not all start", file=sys.stderr)
            sys.exit(ERROR)
        time.sleep(0.01)
    verdict(True, "left three sleep processes behind")


ATTACKS = {
    "tiocsti": tiocsti,
    "tcp": tcp,
    "abstract": abstract,
    "mq-name": mq_name,
    "mq-path": mq_path,
    "shm-path": shm_path,
    "sysv": sysv,
    "pid": pid,
    "proc-door": proc_door,
    "fds": fds,
    "survive": survive,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in ATTACKS:
        print(f"usage: attack.py {{{','.join(ATTACKS)}}} ARG...", file=sys.stderr)
        sys.exit(ERROR)
    try:
        ATTACKS[sys.argv[1]](*sys.argv[2:])
    except TypeError as error:
        print(f"attack.py {sys.argv[1]}: {error}", file=sys.stderr)
        sys.exit(ERROR)
