"""Runs a command under a seccomp profile in the OCI JSON form that
Kubernetes' Localhost profiles and container runtimes load
(deploy/seccomp/tailmesh.json): default action, per-syscall rules with
argument conditions. Syscalls the running kernel's libseccomp does not
know are skipped, as runtimes do. Needs Debian's python3-seccomp.

Usage: seccomp_profile.py PROFILE.json COMMAND [ARGS...]"""
import json
import os
import sys

import seccomp

OPS = {
    "SCMP_CMP_EQ": seccomp.EQ,
    "SCMP_CMP_NE": seccomp.NE,
    "SCMP_CMP_LT": seccomp.LT,
    "SCMP_CMP_LE": seccomp.LE,
    "SCMP_CMP_GT": seccomp.GT,
    "SCMP_CMP_GE": seccomp.GE,
    "SCMP_CMP_MASKED_EQ": seccomp.MASKED_EQ,
}


def action(name, errno_ret):
    if name == "SCMP_ACT_ALLOW":
        return seccomp.ALLOW
    if name == "SCMP_ACT_ERRNO":
        return seccomp.ERRNO(errno_ret)
    raise SystemExit(f"unsupported action {name}")


def main():
    profile = json.load(open(sys.argv[1]))
    default_errno = profile.get("defaultErrnoRet", 1)
    f = seccomp.SyscallFilter(defaction=action(profile["defaultAction"], default_errno))
    for rule in profile["syscalls"]:
        act = action(rule["action"], rule.get("errnoRet", default_errno))
        args = [
            seccomp.Arg(a["index"], OPS[a["op"]], a["value"], a.get("valueTwo", 0))
            for a in rule.get("args", [])
        ]
        for name in rule["names"]:
            try:
                f.add_rule(act, name, *args)
            except (RuntimeError, ValueError):
                pass  # not a syscall on this architecture / libseccomp
    f.load()
    os.execv(sys.argv[2], sys.argv[2:])


main()
