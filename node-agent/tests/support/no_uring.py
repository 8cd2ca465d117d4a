"""Runs a command with io_uring_setup denied (EPERM) by a seccomp filter,
as Docker's and containerd's default profiles do. Needs Debian's
python3-seccomp (./test.sh installs it); fails loudly without it."""
import errno
import os
import sys

import seccomp

f = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
f.add_rule(seccomp.ERRNO(errno.EPERM), "io_uring_setup")
f.load()
os.execv(sys.argv[1], sys.argv[1:])
