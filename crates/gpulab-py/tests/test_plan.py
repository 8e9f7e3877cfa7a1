"""The Python API over the same core as the CLI: plans, the catalog, and errors as exception classes."""

import pathlib

import pytest

import gpulab


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """A user with no config, no keys and none of the original scripts' variables."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    for var in ["CLUSTER_NAME", "AWS_REGION", "AWS_DEFAULT_REGION", "NODE_TYPE", "MIN_NODES", "MAX_NODES",
                "DESIRED_NODES", "POD_NAME", "SSH_KEY"]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_default_plan_costs_what_the_cli_says():
    plan = gpulab.plan()
    assert plan["instance"]["name"] == "g4dn.xlarge"
    assert plan["region"] == "us-west-2"
    assert 0.64 < plan["cost"]["per_hour"] < 0.66
    kinds = {obj["kind"] for obj in plan["kubernetes"]}
    assert {"DaemonSet", "StatefulSet", "PersistentVolumeClaim", "Secret"} <= kinds


def test_keyword_arguments_override_files_and_environment(isolated, monkeypatch):
    (isolated / "gpulab.toml").write_text('region = "us-east-1"\n[nodes]\ninstance_type = "g6.xlarge"\n')
    monkeypatch.setenv("NODE_TYPE", "g5.xlarge")
    plan = gpulab.plan(desired_nodes=2, spot=True, tags={"team": "ml"})
    assert plan["region"] == "us-east-1"
    assert plan["instance"]["name"] == "g5.xlarge"
    assert plan["cost"]["items"][0]["quantity"].startswith("2 ×")
    assert plan["tags"]["team"] == "ml"


def test_invalid_settings_raise_spec_error_with_every_problem(monkeypatch):
    monkeypatch.setenv("MIN_NODES", "3")
    with pytest.raises(gpulab.SpecError) as info:
        gpulab.plan(node_type="m5.large", region="us-west-9")
    err = info.value
    assert isinstance(err, gpulab.GpulabError)
    fields = {e["field"]: e for e in err.errors}
    assert set(fields) == {"region", "nodes.instance_type", "nodes.min"}
    assert fields["nodes.instance_type"]["source"] == {"kind": "argument", "name": "node_type="}
    assert fields["nodes.min"]["source"] == {"kind": "env", "name": "MIN_NODES"}
    assert "has no GPU" in str(err)


def test_unknown_and_mistyped_arguments_are_refused():
    with pytest.raises(TypeError, match="node_typ"):
        gpulab.plan(node_typ="g5.xlarge")
    with pytest.raises(gpulab.SpecError) as info:
        gpulab.plan(min_nodes="two", spot="yes", node_type="m5.large", tags={"team": 1})
    # One mapping of options in the core, shared with the CLI and Lab::builder(): each problem names its
    # argument and what it takes, and the spec's own problems come with them.
    problems = {e["field"]: e for e in info.value.errors}
    assert problems["nodes.min"] == {"field": "nodes.min", "value": "two", "source": {"kind": "argument",
                                     "name": "min_nodes="}, "problem": "not a whole number",
                                     "allowed": "a whole number, 0 or more"}
    assert problems["nodes.capacity"]["allowed"] == "true or false"
    assert problems["tags"]["problem"] == 'the value of "team" is not text'
    assert "has no GPU" in problems["nodes.instance_type"]["problem"]
    with pytest.raises(gpulab.SpecError, match="not a value gpulab takes"):
        gpulab.plan(gpus=object())


def test_paths_and_none_are_arguments_too(isolated):
    key = isolated / "home" / ".ssh" / "work.pub"
    key.write_text("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGdwdWxhYi10ZXN0LWtleS1ub3QtcmVhbC0xMjM0NTY3 test\n")
    lab = gpulab.Lab(ssh_key=key, image=None)
    assert lab.spec["workspace"]["ssh_public_key"] == str(key)
    assert lab.spec["workspace"]["image"].startswith("nvidia/cuda:")


def test_catalog_filters():
    rows = gpulab.catalog(gpu="h100", region="us-east-1")
    assert rows and all(r["gpu"] == "h100" for r in rows)
    cheap = gpulab.catalog(max_price_per_hour=0.6)
    assert any(r["name"] == "g4dn.xlarge" for r in cheap)


def test_stubs_ship_with_the_package():
    package = pathlib.Path(gpulab.__file__).parent
    assert (package / "py.typed").exists()
    assert (package / "_gpulab.pyi").exists()
