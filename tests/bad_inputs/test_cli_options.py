"""Every option of every subcommand x bad values: exit 2 and one error line that
names the option (or the value).  The options are read from the parsers, so a
new option without cases here fails test_every_option_has_cases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.bad_inputs.conftest import assert_error
from vmm_model.cli import COMMANDS, build_parser

LONG = "x" * 5000
# subcommand -> option -> [(bad value, text the error names)]; None value = a flag given "=1"
BAD = {
    "plan": {
        "--qemu": [("nope", "--qemu"), (",", "--qemu"), ("10.1,,10.2", "--qemu"), ("", "--qemu"),
                   ("12.0", "'12.0'"), ("6.2", "'6.2'"), (LONG, "--qemu")],
        "--backend": [("nope", "--backend"), ("", "--backend"), (",", "--backend"),
                      ("type1,iommufd", "--backend")],
        "--kernel": [("nope", "--kernel"), ("", "--kernel"), (",", "--kernel"),
                     ("5.4", "--kernel"), (LONG, "--kernel")],
        "--policy": [("nope", "--policy"), ("", "--policy"), (":", "--policy"),
                     ("no_such_module_x:f", "--policy"), ("os:getcwd", "policy os:getcwd"),
                     ("json:loads", "policy json:loads"), ("os.path:nothing", "--policy")],
        "--json": [(None, "--json")], "--jsonl": [(None, "--jsonl")],
        "--check": [(None, "--check")], "--no-compare": [(None, "--no-compare")],
        "--wide": [(None, "--wide")], "--all": [(None, "--all")],
        "--against-binary": [("/nonexistent/qemu", "--against-binary"),
                             ("", "--against-binary")],
        "--host-iommu": [("nope", "--host-iommu"), (",", "--host-iommu"), ("", "--host-iommu")],
        "--libvirt": [("1.0", "--libvirt applies to libvirt domain XML only")],
    },
    "compare": {
        "--backends": [("nope", "--backends"), (",", "--backends"), ("", "--backends"),
                       ("type1,,iommufd", "--backends"), ("all", "--backends")],
        "--kernels": [("nope", "--kernels"), ("none", "--kernels"), (",", "--kernels"),
                      ("", "--kernels"), ("7.2,,6.12", "--kernels")],
        "--qemu": [("nope", "--qemu"), (",", "--qemu"), ("", "--qemu")],
        "--policy": [("nope", "--policy"), ("", "--policy"), (":", "--policy")],
        "--json": [(None, "--json")],
        "--host-iommu": [("nope", "--host-iommu")],
        "--libvirt": [("1.0", "--libvirt applies to libvirt domain XML only")],
    },
    "gallery": {"--json": [(None, "--json")], "--wide": [(None, "--wide")]},
    "versions": {"--json": [(None, "--json")]},
    "profiles": {"--kernel": [("nope", "--kernel"), ("", "--kernel"), (",", "--kernel"),
                              ("none", "--kernel")],
                 "--json": [(None, "--json")], "--host-iommus": [(None, "--host-iommus")]},
    "inspect": {
        "--qmp": [("/nonexistent/q.sock", "/nonexistent/q.sock"), ("", "--qmp"),
                  ("/proc/self/status", "/proc/self/status"), ("/", "/")],
        "--timeout": [("nan", "--timeout"), ("inf", "--timeout"), ("-inf", "--timeout"),
                      ("-1", "--timeout"), ("0", "--timeout"), ("x", "--timeout"),
                      ("", "--timeout"), ("1e999", "--timeout")],
        "--backend": [("nope", "--backend")],
        "--save": [("/nonexistent/dir/x.toml", "/nonexistent/q.sock")],
        "--write-scenario": [("/nonexistent/dir/x.toml", "/nonexistent/q.sock")],
        "--qemu": [("nope", "--qemu")],
        "--kernel": [("nope", "--kernel"), ("", "--kernel")],
        "--hmp-stdio": [(None, "--hmp-stdio")], "--json": [(None, "--json")],
        "--no-compare": [(None, "--no-compare")],
    },
    "probe": {"--require": [("nope", "nope"), (",", "--require")],
              "--json": [(None, "--json")]},
    "migrate-check": {
        "--from": [("qemu=nope", "--from qemu"), ("bogus=1", "--from"), ("qemu", "--from")],
        "--to": [("kernel=nope", "--to"), ("mode=x", "--to")],
        "--mode": [("x", "--mode")], "--jobs": [("0", "--jobs"), ("x", "--jobs"),
                                                 ("-3", "--jobs")],
        "--json": [(None, "--json")], "--strict": [(None, "--strict")],
        "--quiet": [(None, "--quiet")], "--verbose": [(None, "--verbose")],
        "--libvirt": [("nope", "--libvirt")],
    },
    "libvirt-argv": {"--libvirt": [("nope", "--libvirt")],
                     "--json": [(None, "--json")]},
    "run": {"--kernel": [("nope", "--kernel")], "--until": [("x", "--until")],
            "--timeout": [("nan", "--timeout"), ("0", "--timeout")],
            "--shape": [("/nonexistent/s.toml", "/nonexistent/s.toml")],
            "--brief": [(None, "--brief")], "--json": [(None, "--json")],
            "--against-model": [(None, "--against-model")]},
}
# inspect needs a socket: its other options are checked against a missing one
PREFIX = {"plan": ["plan", "s02"], "compare": ["compare", "s17"],
          "inspect": ["inspect", "--qmp", "/nonexistent/q.sock"],
          "migrate-check": ["migrate-check", "s06"],
          "libvirt-argv": ["libvirt-argv", str(Path(__file__).resolve().parents[2] / "vmm_model"
                                               / "gallery" / "lv02-memfd-shared.xml")]}
SUFFIX = {"run": ["--", "/nonexistent/qemu"]}


def cases():
    for cmd, opts in BAD.items():
        for opt, values in opts.items():
            for i, (v, names) in enumerate(values):
                yield pytest.param(cmd, opt, v, names, id=f"{cmd}{opt}-{i}")


@pytest.mark.parametrize("cmd,opt,value,names", list(cases()))
def test_option_bad_value(vfio_emu, cmd, opt, value, names):
    argv = list(PREFIX.get(cmd, [cmd]))
    if opt == "--qmp":
        argv = ["inspect"]
    argv += ([f"{opt}=1"] if value is None else [opt, value]) + SUFFIX.get(cmd, [])
    assert_error(vfio_emu(*argv), names)


def test_every_option_has_cases():
    for cmd in BAD:
        sub = build_parser(cmd)._subparsers._group_actions[0].choices[cmd]
        opts = {o for a in sub._actions for o in a.option_strings if o.startswith("--")}
        assert opts - {"--help"} == set(BAD[cmd]), cmd
    assert set(BAD) | {"rig"} == set(COMMANDS)          # rig: test_command_line_shape


@pytest.mark.parametrize("argv,names", [
    (["--bogus"], "--bogus"), (["nosuchcmd"], "'nosuchcmd'"), (["plan", "--bogus"], "--bogus"),
    (["gallery", "extra"], "extra"), (["versions", "extra"], "extra"),
    (["plan", "s02", "--json", "--jsonl"], "--jsonl"),
    (["plan", "s02", "s06"], "s06"), (["plan", "no-such-scenario"], "'no-such-scenario'"),
    (["plan", "/nonexistent/x.toml"], "/nonexistent/x.toml"),
    (["plan", "s02", "--", "-m", "1G"], "not both"), (["plan", "--"], "no QEMU arguments"),
    (["compare"], "compare takes one scenario"), (["compare", "s99"], "'s99'"),
    (["inspect"], "--qmp"), (["inspect", "--qmp", "/x", "--hmp-stdio"], "--qmp"),
    (["inspect", "--hmp-stdio"], "--hmp-stdio"),
    (["inspect", "--qmp", "/nonexistent/q.sock", "--", "-m", "1G"], "--hmp-stdio"),
    (["rig"], "rig"), (["rig", "bogus"], "'bogus'"), (["rig", "run"], "--kernel"),
    (["rig", "run", "--kernel", "nope", "--set", "probe"], "--kernel"),
    (["rig", "run", "--kernel", "7.2", "--set", "nope"], "--set"),
    (["rig", "run", "--kernel", "7.2", "--set", "probe", "--timeout", "nan"], "--timeout"),
    (["rig", "run", "--kernel", "7.2", "--set", "probe", "--edu", "x"], "--edu"),
    (["rig", "build"], "--all"), (["rig", "build", "nope"], "'nope'"),
    (["rig", "list", "--json=1"], "--json"),
    (["run"], "no QEMU binary after --"), (["run", "--timeout", "nan", "--", "x"], "--timeout"),
    (["run", "--kernel", "nope", "--", "/bin/true"], "--kernel"),
    (["run", "--until", "bogus", "--", "/bin/true"], "--until"),
    (["run", "--", "/nonexistent/qemu"], "/nonexistent/qemu"),
])
def test_command_line_shape(vfio_emu, argv, names):
    assert_error(vfio_emu(*argv), names)


def test_no_command_prints_help_exit_2(vfio_emu):
    r = vfio_emu()
    assert r.rc == 2 and r.out.startswith("usage: vfio-emu") and r.err == ""
