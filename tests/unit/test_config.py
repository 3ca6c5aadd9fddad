"""Config validation and the lclusterd option parsing (click), without starting anything."""

import pytest
from click.testing import CliRunner

import lclusterd.__main__ as main
from lclusterd.config import Config, ConfigError, load_file, option_names


def test_defaults():
    c = Config(node_name="n1")
    c.validate()
    assert (c.bind_host, c.port, c.address) == ("localhost", 64051, "")  # no TCP without --tls-dir or --insecure
    assert c.socket_path == "/var/lib/lclusterd/lclusterd.sock"
    assert c.etcd == []


def test_listen_host_port_and_etcd_list():
    c = Config(listen="127.0.0.2:9000", etcd="http://a:1, http://b:2", node_name="n")
    assert (c.bind_host, c.port, c.etcd) == ("127.0.0.2", 9000, ["http://a:1", "http://b:2"])


@pytest.mark.parametrize("kw, message", [
    ({"listen": "abc"}, "--listen must be PORT or HOST:PORT"),
    ({"listen": "70000"}, "between 1 and 65535"),
    ({"node_name": "a/b"}, "--node-name"),
    ({"capacity": 0}, "--capacity"),
    ({"on_shutdown": "later"}, "--on-shutdown"),
    ({"prefix": "x"}, "--prefix"),
    ({"rootfs": "rel"}, "--rootfs"),
    ({"keep": "soon"}, "bad --keep value 'soon': expected a duration like 30s, 5m or 1h"),
    ({"keep": "0s"}, "bad --keep value '0s': the duration must be positive"),
    ({"metrics_listen": "9464"}, "--metrics-listen must be HOST:PORT"),
    ({"metrics_listen": "localhost:99999"}, "--metrics-listen must be HOST:PORT"),
    ({"log_format": "xml"}, "--log-format must be one of text, json"),
])
def test_bad_values(kw, message):
    with pytest.raises(ConfigError, match=message):
        Config(**{"node_name": "n", **kw}).validate()


def test_tcp_only_with_tls_or_insecure():
    assert not Config(node_name="n").serves_tcp and Config(node_name="n").address == ""
    assert Config(node_name="n", insecure=True, namespace="h").address == "h:64051"
    assert Config(node_name="n", tls_dir="/d").serves_tcp
    with pytest.raises(ConfigError, match="exclude each other"):
        Config(node_name="n", tls_dir="/d", insecure=True).check_listen_address()
    with pytest.raises(ConfigError, match="cannot resolve"):
        Config(node_name="n", insecure=True, namespace="no-such-host.invalid").check_listen_address()
    for host in ("127.0.0.1", "localhost", "::1"):
        Config(namespace=host, node_name="n", insecure=True).check_listen_address()
    for listen in ("0.0.0.0:64051", "[::]:64051"):  # every caller an admin: not for the network
        with pytest.raises(ConfigError, match="on a loopback address only, and (0.0.0.0|::) is not one"):
            Config(listen=listen, node_name="n", insecure=True).check_listen_address()
    Config(namespace="0.0.0.0", node_name="n", tls_dir="/d").check_listen_address()  # with mutual TLS it may


def test_config_file(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('capacity = 3\nstate-dir = "/x"\netcd = ["http://a:1", "http://b:2"]\n')
    assert load_file(f) == {"capacity": 3, "state_dir": "/x", "etcd": "http://a:1,http://b:2"}
    f.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown option 'colour'"):
        load_file(f)


def _parsed(monkeypatch, args, env=None):
    seen = {}
    monkeypatch.setattr("lclusterd.daemon.run", lambda config: seen.setdefault("config", config) and 0)
    result = CliRunner().invoke(main.cli, args, env=env or {})
    assert result.exit_code == 0, result.output
    return seen["config"]


def test_options_env_and_file_precedence(monkeypatch, tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('capacity = 3\nprefix = "/fromfile"\nnode-name = "filenode"\n')
    config = _parsed(monkeypatch, ["--config", str(f), "--capacity", "5"], env={"LCLUSTERD_PREFIX": "/fromenv"})
    assert (config.capacity, config.prefix, config.node_name) == (5, "/fromenv", "filenode")


def test_keep_from_option_env_and_file(monkeypatch, tmp_path):
    assert Config(node_name="n").keep_seconds == 7 * 86400
    assert _parsed(monkeypatch, ["--keep", "90m"]).keep_seconds == 5400
    assert _parsed(monkeypatch, [], env={"LCLUSTERD_KEEP": "2s"}).keep_seconds == 2
    f = tmp_path / "c.toml"
    f.write_text('keep = "12h"\n')
    assert _parsed(monkeypatch, ["--config", str(f)]).keep_seconds == 12 * 3600


def test_help_explains_every_option():
    result = CliRunner().invoke(main.cli, ["--help"])
    for option in ("--namespace", "--listen", "--etcd", "--rootfs", "--state-dir", "--node-name", "--capacity", "--prefix",
                   "--insecure", "--on-shutdown", "--keep"):
        assert option in result.output


def test_metrics_address():
    assert Config(node_name="n").metrics_address == ("127.0.0.1", 9464)
    assert Config(node_name="n", metrics_listen="").metrics_address is None
    assert Config(node_name="n", metrics_listen="[::1]:9000").metrics_address == ("::1", 9000)
    assert Config(node_name="n", metrics_listen="0.0.0.0:9000").metrics_address == ("0.0.0.0", 9000)


def test_the_config_template_has_every_option_commented_out_at_its_default(monkeypatch, tmp_path):
    text = main.config_template()
    commented = [line[2:] for line in text.splitlines() if line.startswith("# ") and " = " in line]
    names = [line.split(" = ")[0].replace("-", "_") for line in commented]
    assert sorted(names) == sorted(option_names())  # every option, once
    assert load_file(_written(tmp_path, text)) == {}  # as installed: nothing set
    uncommented = _written(tmp_path, "\n".join(commented) + "\n")
    assert _parsed(monkeypatch, ["--config", str(uncommented)]) == _parsed(monkeypatch, [])


def _written(tmp_path, text: str):
    path = tmp_path / f"c{len(text)}.toml"
    path.write_text(text)
    return path
