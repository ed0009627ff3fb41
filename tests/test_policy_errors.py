"""A user policy that raises, returns the wrong thing or prints
(vmm_model/policy_check.py): one error line naming the policy and what it did,
exit 2 in the CLI, and its prints kept off stdout so --json stays valid."""

from __future__ import annotations

import json

import pytest

from vmm_model import PolicyError, plan_scenario
from vmm_model.cli import main

POLICIES = '''
from vmm_model import vfio_container_dma_map_va

def raises(bcontainer, iova, size, vaddr, readonly, mr):
    raise RuntimeError("no idea what to do with\\n" + mr.name)

def returns_int(bcontainer, iova, size, vaddr, readonly, mr):
    return 0

def chatty(bcontainer, iova, size, vaddr, readonly, mr):
    print(f"mapping {mr.name} at {iova:#x}")
    return vfio_container_dma_map_va(bcontainer, iova, size, vaddr, readonly, mr)
'''


@pytest.fixture
def team(tmp_path, monkeypatch):
    (tmp_path / "team_policies.py").write_text(POLICIES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "team_policies"


def test_raising_policy_is_one_error_line(team, capsys):
    assert main(["plan", "s08-memfd-share-off", "--policy", f"{team}:raises"]) == 2
    out, err = capsys.readouterr()
    assert err == ("vfio-emu: error: the policy raised RuntimeError: no idea what to do with "
                   "ram0 (policy team_policies:raises, section ram0 iova 0x0)\n")


def test_policy_returning_a_wrong_type(team, capsys):
    assert main(["plan", "s08-memfd-share-off", "--json", "--policy", f"{team}:returns_int"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("vfio-emu: error: the policy returned 0 (int), not the DmaResult of "
                   "bcontainer.dma_map() or bcontainer.dma_map_file() (policy "
                   "team_policies:returns_int, section ram0 iova 0x0)\n")


def test_policy_prints_stay_off_json_stdout(team, capsys):
    assert main(["plan", "s08-memfd-share-off", "--json", "--no-compare",
                 "--policy", f"{team}:chatty"]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert doc["plans"][0]["policy"] == "team_policies:chatty"
    assert "mapping ram0 at 0x0\n" in err and "mapping ram0" not in out


def test_api_raises_policy_error_with_the_cause(team):
    import team_policies
    with pytest.raises(PolicyError) as e:
        plan_scenario("s08-memfd-share-off", policy=team_policies.raises)
    assert e.value.where == "policy team_policies:raises, section ram0 iova 0x0"
    assert isinstance(e.value.__cause__, RuntimeError)
