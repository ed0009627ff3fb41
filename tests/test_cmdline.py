"""Real QEMU command lines as users capture them: /proc/PID/cmdline and ps lines
of a real QEMU, -readconfig files QEMU accepts, JSON and dotted-key -object /
-device, versioned machine types and properties, every QEMU option; what is not
modelled is listed once; misspellings are errors naming the nearest valid name;
scenario loading is linear."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from vmm_model.cli import main
from vmm_model.qemu.cmdline import from_qemu_args, split_command_line
from vmm_model.scenario import load_scenario, loads_scenario, loads_toml, scenario_kind

QEMU = "/usr/bin/qemu-system-x86_64"
MEMFD = '{"qom-type":"memory-backend-memfd","id":"m0","size":536870912,"share":true}'
ARGS = ["-nodefaults", "-display", "none", "-S", "-no-user-config",
        "-machine", "pc-q35-7.2,vmport=off,dump-guest-core=off,memory-backend=m0",
        "-m", "512", "-object", MEMFD,
        "-object", "iothread,id=io0", "-object", "rng-random,id=rng0,filename=/dev/urandom",
        "-device", '{"driver":"virtio-rng-pci","rng":"rng0","id":"rng1"}',
        "-name", "guest=demo,debug-threads=on", "-rtc", "base=utc", "-msg", "timestamp=on"]


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def live_qemu():
    """A real QEMU 7.2 started paused with the arguments above."""
    if not Path(QEMU).exists():
        pytest.skip(f"{QEMU} is not installed (scripts/test-all.sh installs it)")
    p = subprocess.Popen([QEMU, *ARGS], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while not Path(f"/proc/{p.pid}/cmdline").read_bytes().count(b"\0") > 10:
            assert p.poll() is None, p.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(0.5)
        assert p.poll() is None, p.stderr.read().decode()
        yield p.pid
    finally:
        os.kill(p.pid, signal.SIGTERM)
        p.wait(10)


def _check_demo(sc):
    assert sc.machine == {"type": "q35", "memory-backend": "m0"}
    assert sc.machine_version == "7.2"
    assert sc.memory == {"size": 512 << 20}
    m0 = sc.object("m0")
    assert (m0.type, m0.props) == ("memory-backend-memfd",
                                   {"id": "m0", "size": 512 << 20, "share": True})
    assert sc.not_modelled == [
        "-nodefaults", "-display none", "-S", "-no-user-config",
        "-machine property vmport", "-machine property dump-guest-core",
        "-object iothread (io0)", "-object rng-random (rng0)", "-device virtio-rng-pci (rng1)",
        "-name guest=demo,debug-threads=on", "-rtc base=utc", "-msg timestamp=on"]


def test_proc_pid_cmdline_of_a_real_qemu(live_qemu, tmp_path):
    f = tmp_path / "cmdline"
    f.write_bytes(Path(f"/proc/{live_qemu}/cmdline").read_bytes())
    assert scenario_kind(f.read_text()) == "cmdline"
    _check_demo(load_scenario(f))


def test_ps_args_line_of_a_real_qemu(live_qemu, tmp_path):
    line = subprocess.run(["ps", "-ww", "-o", "args=", "-p", str(live_qemu)], capture_output=True,
                          text=True, check=True).stdout
    assert MEMFD in line          # ps shows the JSON unquoted
    f = tmp_path / "ps.txt"
    f.write_text(line)
    _check_demo(load_scenario(f))


def test_plan_lists_not_modelled_once(live_qemu, tmp_path, capsys):
    f = tmp_path / "cmdline"
    f.write_bytes(Path(f"/proc/{live_qemu}/cmdline").read_bytes())
    rc, out, err = run(capsys, "plan", str(f), "--qemu", "10.0,10.1", "--backend", "all",
                       "--kernel", "none", "--no-compare", "--wide")
    assert rc == 0, err
    assert out.count(": not modelled:") == 1
    assert out.splitlines()[0] == (
        "cmdline: not modelled: -nodefaults; -display none; -S; -no-user-config; -machine "
        "property vmport; -machine property dump-guest-core; -object iothread (io0); -object "
        "rng-random (rng0); -device virtio-rng-pci (rng1); -name guest=demo,debug-threads=on; "
        "-rtc base=utc; -msg timestamp=on")
    assert out.count("== cmdline") == 4


READCONFIG = """# qemu config file

[machine]
  type = "pc-q35-7.2"
  memory-backend = "m0"
  vmport = "off"

[memory]
  size = "512"

[object "m0"]
  qom-type = "memory-backend-memfd"
  size = "512M"
  share = "on"

[object "io0"]
  qom-type = "iothread"
"""


def test_readconfig_file_real_qemu_accepts(tmp_path):
    f = tmp_path / "vm.cfg"
    f.write_text(READCONFIG)
    if Path(QEMU).exists():
        # QEMU itself reads it (and is stopped once it has)
        p = subprocess.Popen([QEMU, "-nodefaults", "-display", "none", "-S", "-readconfig",
                              str(f)], stderr=subprocess.PIPE)
        time.sleep(2)
        assert p.poll() is None, p.stderr.read().decode()
        os.kill(p.pid, signal.SIGTERM)
        p.wait(10)
    sc = load_scenario(f)
    assert sc.machine == {"type": "q35", "memory-backend": "m0"}
    assert sc.object("m0").props == {"id": "m0", "size": 512 << 20, "share": True}
    assert sc.not_modelled == ["-machine property vmport", "-object iothread (io0)"]
    # and as -readconfig inside a command line
    sc2 = from_qemu_args(["-nodefaults", "-readconfig", str(f)])
    assert sc2.model() == sc.model()


def test_json_dotted_and_qemuopts_give_the_same_model():
    a = from_qemu_args(["-m", "1G", "-object",
                        "memory-backend-ram,id=r,size=1G,host-nodes.0=0,host-nodes.1=1,"
                        "policy=bind", "-numa", "node,nodeid=0,memdev=r"])
    b = from_qemu_args(["-m", "1G", "-object",
                        '{"qom-type":"memory-backend-ram","id":"r","size":1073741824,'
                        '"host-nodes":[0,1],"policy":"bind"}', "-numa", "node,nodeid=0,memdev=r"])
    assert a.model() == b.model()
    assert a.object("r").props["host-nodes"] == "0,1"


def test_shell_quoted_libvirt_style_line():
    text = ("LC_ALL=C PATH=/bin HOME=/var/lib/libvirt/qemu/domain-1-x \\\n"
            "/usr/bin/qemu-system-x86_64 \\\n-machine pc-i440fx-10.0,usb=off,memory-backend=pc.ram \\\n"
            "-m size=2097152k \\\n"
            "-object '{\"qom-type\":\"memory-backend-ram\",\"id\":\"pc.ram\",\"size\":2147483648}' \\\n"
            "-device '{\"driver\":\"vfio-pci\",\"host\":\"0000:3b:00.0\",\"id\":\"hostdev0\","
            "\"bus\":\"pci.0\",\"addr\":\"0x3\",\"rombar\":0}'\n")
    sc = loads_scenario(text, "x.args", "x")
    assert sc.machine == {"type": "pc", "memory-backend": "pc.ram"}
    assert sc.machine_version == "10.0"
    assert [(d.type, d.props) for d in sc.devices] == \
        [("vfio-pci", {"host": "0000:3b:00.0", "id": "hostdev0"})]
    assert sc.not_modelled == ["-machine property usb", "vfio-pci property addr",
                               "vfio-pci property bus", "vfio-pci property rombar"]


def test_split_command_line_forms():
    assert split_command_line("qemu-system-x86_64\0-m\0001G\0") == ["-m", "1G"]
    assert split_command_line("/usr/bin/qemu-system-x86_64 -m 1G -name a") == \
        ["-m", "1G", "-name", "a"]
    assert split_command_line("-object '{\"a\": 1}'") == ["-object", '{"a": 1}']


@pytest.mark.parametrize("args,message,where", [
    (["-mem-pth", "/dev/hugepages"], "-mem-pth: invalid option (did you mean '-mem-path'?)",
     "argument 1 (-mem-pth)"),
    (["-m", "1G", "-device", "vfio-pcii,host=0000:3b:00.0"],
     "'vfio-pcii' is not a valid device model name (did you mean 'vfio-pci'?)",
     "argument 3 (-device)"),
    (["-m", "1G", "-device", '{"driver":"vfio-pci","hots":"0000:3b:00.0"}'],
     "vfio-pci has no property 'hots' (did you mean 'host'?)", "argument 3 (-device)"),
    (["-m", "1G", "-object", "memory-backend-file,id=m,size=1G,mem-pth=/x"],
     "memory-backend-file has no property 'mem-pth' (did you mean 'mem-path'?)",
     "argument 3 (-object)"),
    (["-object", "memory-backend-memdf,id=m,size=1G"],
     "invalid object type: memory-backend-memdf (did you mean 'memory-backend-memfd'?)",
     "argument 1 (-object)"),
    (["-machine", "q35,memory-backnd=m"],
     "-machine has no property 'memory-backnd' (did you mean 'memory-backend'?)",
     "argument 1 (-machine)"),
    (["-machine", "pc-q36-7.2"], "unsupported machine type 'pc-q36-7.2'",
     "argument 1 (-machine)"),
    (["-m", "size=1G,slot=2"], "-m has no property 'slot' (did you mean 'slots'?)",
     "argument 1 (-m)"),
    (["-m", "1G", "-device", '{"driver":"vfio-pci",'], "malformed JSON",
     "argument 3 (-device)"),
])
def test_misspellings_name_the_nearest_valid_name(capsys, args, message, where):
    rc, out, err = run(capsys, "plan", "--kernel", "none", "--", *args)
    assert rc == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("vfio-emu: error: ") and message in err and f"{where})" in err, err


def test_every_qemu_option_is_known_and_arity_is_right():
    from vmm_model.qemu import names
    assert names.OPTIONS["-mem-prealloc"] is False and names.OPTIONS["-mem-path"] is True
    assert names.OPTIONS["-no-acpi"] is False      # 7.2 has it (libvirt 9.0 emits it)
    sc = from_qemu_args(["-m", "1G", "-enable-kvm", "-smp", "2", "-mem-prealloc",
                         "-global", "ICH9-LPC.disable_s3=1", "-sandbox", "on"])
    assert sc.not_modelled == ["-enable-kvm", "-smp 2", "-mem-prealloc",
                               "-global ICH9-LPC.disable_s3=1", "-sandbox on"]


# --- linear loading --------------------------------------------------------------------

def _many_tables(n, last_bad=False):
    parts = ['title = "many"\n[machine]\ntype = "q35"\n']
    for i in range(n):
        bad = last_bad and i == n - 1
        parts.append(f'[[object]]\nqom-type = "memory-backend-ram"\nid = "m{i}"\n'
                     f'size = "{"1Z" if bad else "1M"}"\n')
    return "\n".join(parts)


def test_20000_object_tables_load_and_errors_point_at_the_last_line():
    sc = loads_toml(_many_tables(20000), "many.toml", "many")
    assert len(sc.objects) == 20000 and sc.objects[-1].id == "m19999"
    text = _many_tables(20000, last_bad=True)
    with pytest.raises(Exception) as e:
        loads_toml(text, "many.toml", "many")
    line = text.splitlines().index('size = "1Z"') + 1
    assert str(e.value).startswith(f"many.toml:{line}: size: bad value '1Z'")


def test_20000_objects_on_a_command_line():
    argv = ["-m", "1G"]
    for i in range(20000):
        argv += ["-object", f"memory-backend-ram,id=m{i},size=1M"]
    sc = from_qemu_args(argv)
    assert len(sc.objects) == 20000


def test_kind_by_content():
    assert scenario_kind("<?xml version='1.0'?>\n<domain type='kvm'/>") == "libvirt"
    assert scenario_kind("-m 1G") == "cmdline"
    assert scenario_kind("LC_ALL=C /usr/bin/qemu-system-x86_64 -m 1G") == "cmdline"
    assert scenario_kind('title = "x"\n[machine]\ntype = "q35"\n') == "toml"
    assert scenario_kind('title="x"\n') == "toml"
    assert scenario_kind(READCONFIG) == "cmdline"
    assert json.loads(MEMFD)["qom-type"] == "memory-backend-memfd"


@pytest.mark.parametrize("args,message", [
    (["-device", '{"driver":["vfio-pci"]}'], "driver must be a string"),
    (["-object", '{"qom-type":5}'], "qom-type must be a string"),
    (["-object", "[1,2]"], "invalid object type: [1"),
    (["-object", '{"qom-type":"memory-backend-ram","id":"m","size":{"a":1}}'],
     "size: bad value {'a': 1} for memory-backend-ram"),
    (["-numa", '{"type":"node","memdev":"nope"}', "-m", "1G"],
     "no memory backend with id 'nope'"),
    (["-machine", '{"type":"q35","memory-backend":7}'], "memory-backend: bad value 7"),
    (["-object"], "option -object needs an argument"),
])
def test_odd_arguments_are_one_line_errors(capsys, args, message):
    rc, out, err = run(capsys, "plan", "--kernel", "none", "--", *args)
    assert rc == 2 and out == "" and err.count("\n") == 1 and message in err, err
