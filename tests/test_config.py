"""providers.yaml: parsing, `${VAR}` expansion, and each problem reported with its key path and line."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gateway.config import DEFAULT_CONFIG, ConfigError, Problem, Timeouts, load_config, parse_config

REPO = Path(__file__).resolve().parents[1]


def yaml_text(text: str) -> str:
    return textwrap.dedent(text).lstrip("\n")


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based number of the line holding the `occurrence`-th `needle`."""
    seen = 0
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == occurrence:
                return number
    raise AssertionError(f"{needle!r} not in the text")


def problems_of(text: str) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "test.yaml")
    assert info.value.source == "test.yaml"
    assert info.value.problems
    return info.value.problems


def only_problem(text: str) -> Problem:
    problems = problems_of(text)
    assert len(problems) == 1, problems
    return problems[0]


def problem_at(problems: list[Problem], path: str) -> Problem:
    found = [p for p in problems if p.path == path]
    assert found, f"no problem at {path!r} in {problems}"
    return found[0]


VALID = yaml_text("""
    auth: none
    server:
      host: 0.0.0.0
      port: 9090
      sse_keepalive: 5
      max_body_bytes: 2048
      shutdown_grace: 3.5
    providers:
      - name: demo
        kind: demo
        models: [echo, echo2]
        token_interval: 0
      - name: up
        kind: openai
        base_url: https://api.example.com/v1/
        api_key: ${TEST_CFG_KEY}
        models: [gpt-4o-mini]
        timeouts: {connect: 1, first_byte: 2, idle: 3.5, total: 40}
        headers: {X-Org: "${TEST_CFG_ORG:-acme}"}
        stream_options: false
        max_event_bytes: 4096
    routes:
      chat: [up/gpt-4o-mini, demo/echo]
      single: demo/echo2
    middlewares: [normalize, moderate]
""")


# ---------------------------------------------------------------------------------------------- valid


def test_valid_config_parses(monkeypatch):
    monkeypatch.setenv("TEST_CFG_KEY", "sk-abc")
    monkeypatch.delenv("TEST_CFG_ORG", raising=False)
    config = parse_config(VALID, "valid.yaml")
    assert config.source == "valid.yaml"

    server = config.server
    assert (server.host, server.port, server.sse_keepalive, server.max_body_bytes, server.shutdown_grace) == (
        "0.0.0.0", 9090, 5, 2048, 3.5)

    assert list(config.providers) == ["demo", "up"]
    demo = config.providers["demo"]
    assert demo.kind == "demo"
    assert demo.models == ("echo", "echo2")
    assert demo.token_interval == 0.0
    assert demo.enabled and demo.missing_env == ()
    assert demo.timeouts == Timeouts()

    up = config.providers["up"]
    assert up.kind == "openai"
    assert up.base_url == "https://api.example.com/v1"  # trailing slash dropped
    assert up.api_key == "sk-abc"
    assert up.key_vars == ("TEST_CFG_KEY",)
    assert up.models == ("gpt-4o-mini",)
    assert up.timeouts == Timeouts(connect=1.0, first_byte=2.0, idle=3.5, total=40.0)
    assert up.headers == {"X-Org": "acme"}
    assert up.stream_options is False
    assert up.max_event_bytes == 4096
    assert up.enabled

    assert config.routes == {"chat": ("up/gpt-4o-mini", "demo/echo"), "single": ("demo/echo2",)}
    assert config.middlewares == ("normalize", "moderate")


def test_defaults_when_optional_sections_are_missing():
    config = parse_config("providers:\n  - {name: demo, kind: demo}\n")
    assert config.server.host == "127.0.0.1"
    assert config.server.port == 8080
    assert config.routes == {}
    assert config.middlewares == ("normalize",)
    assert config.providers["demo"].models is None


def test_partial_timeouts_keep_the_other_defaults():
    config = parse_config(yaml_text("""
        providers:
          - name: up
            kind: openai
            base_url: http://127.0.0.1:1/v1
            timeouts: {idle: 7}
    """))
    assert config.providers["up"].timeouts == Timeouts(idle=7.0)


# ---------------------------------------------------------------------------------------------- ${VAR}

ENV_TEXT = yaml_text("""
    providers:
      - name: up
        kind: openai
        base_url: ${TEST_CFG_BASE:-http://127.0.0.1:11434/v1}
        api_key: ${TEST_CFG_KEY}
        headers: {X-Team: "${TEST_CFG_TEAM:-core}-${TEST_CFG_ENVNAME:-dev}"}
""")


def test_var_expansion_uses_the_environment(monkeypatch):
    monkeypatch.setenv("TEST_CFG_BASE", "https://llm.internal/v1")
    monkeypatch.setenv("TEST_CFG_KEY", "sk-from-env")
    monkeypatch.setenv("TEST_CFG_TEAM", "infra")
    monkeypatch.setenv("TEST_CFG_ENVNAME", "prod")
    up = parse_config(ENV_TEXT).providers["up"]
    assert up.base_url == "https://llm.internal/v1"
    assert up.api_key == "sk-from-env"
    assert up.headers == {"X-Team": "infra-prod"}
    assert up.enabled


def test_var_defaults_apply_when_unset(monkeypatch):
    for name in ("TEST_CFG_BASE", "TEST_CFG_TEAM", "TEST_CFG_ENVNAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEST_CFG_KEY", "k")
    up = parse_config(ENV_TEXT).providers["up"]
    assert up.base_url == "http://127.0.0.1:11434/v1"
    assert up.headers == {"X-Team": "core-dev"}
    assert up.enabled


def test_var_inside_a_longer_string(monkeypatch):
    monkeypatch.setenv("TEST_CFG_HOST", "gw.example.org")
    monkeypatch.setenv("TEST_CFG_KEY", "key123")
    up = parse_config(yaml_text("""
        providers:
          - name: up
            kind: openai
            base_url: https://${TEST_CFG_HOST}:8443/v1
            api_key: "Key-${TEST_CFG_KEY}-x"
    """)).providers["up"]
    assert up.base_url == "https://gw.example.org:8443/v1"
    assert up.api_key == "Key-key123-x"


def test_provider_with_unset_key_variable_is_disabled(monkeypatch):
    monkeypatch.delenv("TEST_CFG_KEY", raising=False)
    config = parse_config(ENV_TEXT)
    up = config.providers["up"]
    assert not up.enabled
    assert up.missing_env == ("TEST_CFG_KEY",)
    assert up.key_vars == ("TEST_CFG_KEY",)
    assert up.api_key is None


def test_empty_key_variable_counts_as_unset(monkeypatch):
    monkeypatch.setenv("TEST_CFG_KEY", "")
    up = parse_config(ENV_TEXT).providers["up"]
    assert not up.enabled
    assert up.missing_env == ("TEST_CFG_KEY",)


def test_every_missing_variable_is_named_once(monkeypatch):
    monkeypatch.delenv("TEST_CFG_A", raising=False)
    monkeypatch.delenv("TEST_CFG_B", raising=False)
    up = parse_config(yaml_text("""
        providers:
          - name: up
            kind: openai
            base_url: http://127.0.0.1:1/v1
            api_key: ${TEST_CFG_A}${TEST_CFG_A}
            headers: {X-B: "${TEST_CFG_B}"}
    """)).providers["up"]
    assert not up.enabled
    assert up.missing_env == ("TEST_CFG_A", "TEST_CFG_B")


def test_provider_without_api_key_is_enabled():
    up = parse_config("providers:\n  - {name: local, kind: openai, base_url: 'http://127.0.0.1:8000/v1'}\n")
    assert up.providers["local"].enabled
    assert up.providers["local"].api_key is None


# ---------------------------------------------------------------------------------------------- unknown keys

UNKNOWN_KEYS = [
    ("root", "providers:\n  - {name: demo, kind: demo}\nbogus_root: 1\n", "bogus_root", "bogus_root"),
    ("server", "server:\n  host: 127.0.0.1\n  prot: 80\nproviders:\n  - {name: demo, kind: demo}\n",
     "server.prot", "prot: 80"),
    ("provider", "providers:\n  - name: demo\n    kind: demo\n    modles: [echo]\n",
     "providers[0].modles", "modles"),
    ("second provider",
     "providers:\n  - name: demo\n    kind: demo\n  - name: up\n    kind: openai\n"
     "    base_url: http://127.0.0.1:1/v1\n    apikey: x\n",
     "providers[1].apikey", "apikey"),
    ("timeouts",
     "providers:\n  - name: up\n    kind: openai\n    base_url: http://127.0.0.1:1/v1\n"
     "    timeouts:\n      connect: 1\n      read: 5\n",
     "providers[0].timeouts.read", "read: 5"),
]


@pytest.mark.parametrize("text,path,needle", [c[1:] for c in UNKNOWN_KEYS], ids=[c[0] for c in UNKNOWN_KEYS])
def test_unknown_keys_are_errors_with_path_and_line(text, path, needle):
    problem = only_problem(text)
    assert problem.path == path
    assert problem.line == line_of(text, needle)
    assert "unknown key" in problem.message
    assert f"line {problem.line}: {path}: " in str(problem)


def test_several_problems_are_all_reported():
    text = yaml_text("""
        server:
          port: "80"
          colour: blue
        providers:
          - name: demo
            kind: demo
            extra: 1
        middlewares: [normalize, compress]
    """)
    problems = problems_of(text)
    assert {p.path for p in problems} == {"server.port", "server.colour", "providers[0].extra", "middlewares[1]"}
    for problem in problems:
        assert problem.line is not None
    assert problem_at(problems, "server.colour").line == line_of(text, "colour")
    assert problem_at(problems, "providers[0].extra").line == line_of(text, "extra")
    assert problem_at(problems, "middlewares[1]").line == line_of(text, "middlewares")


# ---------------------------------------------------------------------------------------------- wrong types

WRONG_TYPES = [
    ("port string", "server:\n  port: '80'\n", "server.port", "integer"),
    ("port bool", "server:\n  port: true\n", "server.port", "integer"),
    ("port too big", "server:\n  port: 70000\n", "server.port", "65535"),
    ("host number", "server:\n  host: 12\n", "server.host", "string"),
    ("keepalive string", "server:\n  sse_keepalive: soon\n", "server.sse_keepalive", "number"),
    ("keepalive zero", "server:\n  sse_keepalive: 0\n", "server.sse_keepalive", "greater than 0"),
    ("max body float", "server:\n  max_body_bytes: 1.5\n", "server.max_body_bytes", "integer"),
    ("server list", "server: [1, 2]\n", "server", "mapping"),
]


@pytest.mark.parametrize("server,path,words", [c[1:] for c in WRONG_TYPES], ids=[c[0] for c in WRONG_TYPES])
def test_wrong_server_types(server, path, words):
    text = server + "providers:\n  - {name: demo, kind: demo}\n"
    problem = only_problem(text)
    assert problem.path == path
    assert words in problem.message
    assert problem.line == (1 if path == "server" else 2)


PROVIDER_TYPES = [
    ("name number", "name: 5", "providers[0].name", "string"),
    ("name chars", "name: 'my provider'", "providers[0].name", "letters"),
    ("base_url scheme", "base_url: ftp://x", "providers[0].base_url", "http"),
    ("models string", "models: gpt-4o", "providers[0].models", "list"),
    ("models numbers", "models: [1, 2]", "providers[0].models", "list"),
    ("timeouts list", "timeouts: [1, 2]", "providers[0].timeouts", "mapping"),
    ("timeout string", "timeouts: {connect: fast}", "providers[0].timeouts.connect", "number"),
    ("timeout negative", "timeouts: {total: -1}", "providers[0].timeouts.total", "greater than 0"),
    ("headers list", "headers: [a, b]", "providers[0].headers", "header"),
    ("header value number", "headers: {X-N: 5}", "providers[0].headers", "header"),
    ("stream_options string", "stream_options: sometimes", "providers[0].stream_options", "true or false"),
    ("max_event_bytes small", "max_event_bytes: 10", "providers[0].max_event_bytes", "1024"),
    ("token_interval on openai", "token_interval: 0", "providers[0].token_interval", "demo"),
    ("api_key number", "api_key: 12345", "providers[0].api_key", "string"),
    ("retry attempts zero", "retry: {attempts: 0}", "providers[0].retry.attempts", "at least 1"),
    ("retry attempts float", "retry: {attempts: 1.5}", "providers[0].retry.attempts", "integer"),
    ("retry unknown key", "retry: {tries: 2}", "providers[0].retry.tries", "unknown key"),
    ("retry backoff negative", "retry: {backoff_initial: -1}", "providers[0].retry.backoff_initial", "at least 0"),
    ("retry backoff_max below initial", "retry: {backoff_initial: 2, backoff_max: 1}",
     "providers[0].retry.backoff_max", "backoff_initial"),
    ("health cooldown zero", "health: {cooldown: 0}", "providers[0].health.cooldown", "greater than 0"),
    ("health max_failures negative", "health: {max_failures: -1}", "providers[0].health.max_failures", "at least 0"),
    ("on_malformed other", "on_malformed: ignore", "providers[0].on_malformed", "skip or error"),
]


@pytest.mark.parametrize("entry,path,words", [c[1:] for c in PROVIDER_TYPES], ids=[c[0] for c in PROVIDER_TYPES])
def test_wrong_provider_types(entry, path, words):
    fields = {"name": "name: up", "kind": "kind: openai", "base_url": "base_url: http://127.0.0.1:1/v1"}
    fields[entry.split(":")[0]] = entry
    text = "providers:\n  - " + "\n    ".join(fields.values()) + "\n"
    problem = only_problem(text)
    assert problem.path == path
    assert words in problem.message
    assert problem.line == line_of(text, entry.split(":")[0] + ":")


def test_resilience_defaults_and_values():
    config = parse_config("providers:\n  - {name: a, kind: openai, base_url: 'http://h/v1'}\n"
                          "  - {name: b, kind: openai, base_url: 'http://h/v1', on_malformed: error,\n"
                          "     retry: {attempts: 4, backoff_initial: 0, retry_after_max: 0},\n"
                          "     health: {max_failures: 0, cooldown: 5}}\n")
    a, b = config.providers["a"], config.providers["b"]
    assert (a.retry.attempts, a.health.max_failures, a.on_malformed) == (2, 5, "skip")
    assert (b.retry.attempts, b.retry.backoff_initial, b.retry.backoff_max, b.retry.retry_after_max) == (4, 0, 4.0, 0)
    assert (b.health.max_failures, b.health.cooldown, b.on_malformed) == (0, 5, "error")


def test_providers_must_be_a_non_empty_list():
    for text in ("providers: {name: demo}\n", "providers: []\n", "providers:\n"):
        problem = only_problem(text)
        assert problem.path == "providers"
        assert problem.line == 1


def _problems_in_subprocess(text: str) -> list[tuple]:
    """parse_config in a child process, so that a hang fails this test instead of stalling the suite."""
    code = (
        "import sys\n"
        "from gateway.config import ConfigError, parse_config\n"
        "try:\n"
        "    parse_config(sys.stdin.read(), 'test.yaml')\n"
        "except ConfigError as exc:\n"
        "    print(repr([(p.path, p.line, p.message) for p in exc.problems]))\n"
        "else:\n"
        "    print('PARSED')\n"
    )
    try:
        result = subprocess.run([sys.executable, "-c", code], input=text, capture_output=True, text=True,
                                timeout=10, cwd=REPO)
    except subprocess.TimeoutExpired:
        pytest.fail(f"parse_config({text!r}) did not return (hang guard: 10 s)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() != "PARSED"
    return ast.literal_eval(result.stdout.strip())


@pytest.mark.parametrize("text", ["", "server: {port: 1}\n", "- a\n- b\n", "just a string\n"],
                         ids=["empty file", "no providers key", "root a list", "root a scalar"])
def test_missing_providers_key_is_reported(text):
    problems = _problems_in_subprocess(text)
    assert any(path == "providers" or "'providers'" in message for path, _, message in problems), problems
    if text.startswith("-") or text.startswith("just"):
        assert any(path == "" and "mapping" in message for path, _, message in problems), problems


def test_provider_missing_name_and_kind():
    text = "providers:\n  - models: [x]\n"
    problems = problems_of(text)
    assert all(p.path == "providers[0]" for p in problems)
    messages = " ".join(p.message for p in problems)
    assert "'name'" in messages and "'kind'" in messages
    assert all(p.line == 2 for p in problems)


def test_demo_takes_no_base_url():
    problem = only_problem("providers:\n  - name: demo\n    kind: demo\n    base_url: http://x\n")
    assert problem.path == "providers[0]"
    assert "base_url" in problem.message


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_base_url_with_userinfo_and_an_api_key_is_a_problem(kind):
    text = yaml_text(f"""
        providers:
          - name: up
            kind: {kind}
            base_url: https://user:secret-pass@llm.example/v1
            api_key: sk-abc
    """)
    problem = only_problem(text)
    assert problem.path == "providers[0].base_url"
    assert problem.line == line_of(text, "base_url")
    assert "api_key" in problem.message and "user:password@" in problem.message
    assert "secret-pass" not in str(problem)  # the problem never echoes the credential


def test_gateway_check_refuses_userinfo_with_an_api_key_and_names_the_line(tmp_path):
    path = tmp_path / "userinfo.yaml"
    path.write_text("providers:\n  - name: up\n    kind: openai\n"
                    "    base_url: https://user:secret-pass@llm.example/v1\n    api_key: sk-abc\n")
    result = subprocess.run([sys.executable, "-m", "gateway", "check", "--config", str(path)], capture_output=True,
                            text=True, timeout=30, cwd=REPO)
    assert result.returncode == 1
    assert f"{path}: line 4: providers[0].base_url: carries credentials" in result.stderr
    assert "secret-pass" not in result.stderr + result.stdout


def test_base_url_with_userinfo_and_an_authorization_header_is_a_problem():
    text = yaml_text("""
        providers:
          - name: up
            kind: openai
            base_url: https://user:pass@llm.example/v1
            headers: {Authorization: Token xyz}
    """)
    problem = only_problem(text)
    assert problem.path == "providers[0].headers.Authorization"
    assert problem.line == line_of(text, "headers")


def test_base_url_with_userinfo_alone_is_fine():
    config = parse_config("providers:\n  - {name: up, kind: openai, base_url: 'https://u:p@llm.example/v1'}\n")
    assert config.providers["up"].base_url == "https://u:p@llm.example/v1"


def test_duplicate_provider_names():
    text = yaml_text("""
        providers:
          - name: demo
            kind: demo
          - name: other
            kind: demo
          - name: demo
            kind: demo
    """)
    problem = only_problem(text)
    assert problem.path == "providers[2].name"
    assert problem.line == line_of(text, "name: demo", 2)
    assert "duplicate" in problem.message and "demo" in problem.message


def test_duplicate_yaml_keys():
    text = "server:\n  port: 1\n  port: 2\nproviders:\n  - {name: demo, kind: demo}\n"
    problem = only_problem(text)
    assert problem.path == "server.port"
    assert problem.line == 3
    assert "duplicate" in problem.message


def test_unknown_kind():
    text = "providers:\n  - name: x\n    kind: cohere\n    base_url: http://127.0.0.1/v1\n"
    problem = only_problem(text)
    assert problem.path == "providers[0].kind"
    assert problem.line == 3
    assert "openai" in problem.message


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini", "demo"])
def test_known_kinds_parse(kind):
    entry = "{name: p, kind: demo}" if kind == "demo" else f"{{name: p, kind: {kind}, base_url: 'https://h/v1'}}"
    assert parse_config(f"providers:\n  - {entry}\n").providers["p"].kind == kind


# ---------------------------------------------------------------------------------------------- routes, middlewares

ROUTES_BASE = "providers:\n  - name: demo\n    kind: demo\n    models: [echo]\nroutes:\n"


def test_route_naming_an_unknown_provider():
    text = ROUTES_BASE + "  chat:\n    - demo/echo\n    - ghost/gpt-4o\n"
    problem = only_problem(text)
    assert problem.path == "routes.chat[1]"
    assert problem.line == line_of(text, "ghost/gpt-4o")
    assert "ghost" in problem.message


def test_route_as_a_single_string_with_unknown_provider():
    text = ROUTES_BASE + "  chat: ghost/gpt-4o\n"
    problem = only_problem(text)
    assert problem.path == "routes.chat[0]"
    assert problem.line == line_of(text, "ghost/gpt-4o")


@pytest.mark.parametrize("route,path,words", [
    ("  chat: demo/missing\n", "routes.chat[0]", "not in provider"),
    ("  chat: justamodel\n", "routes.chat[0]", "<provider>/<model>"),
    ("  chat: []\n", "routes.chat", "non-empty"),
    ("  chat: [1]\n", "routes.chat", "model name"),
    ("  a/b: demo/echo\n", "routes.a/b", "'/'"),
])
def test_bad_routes(route, path, words):
    text = ROUTES_BASE + route
    problem = only_problem(text)
    assert problem.path == path
    assert words in problem.message
    assert problem.line == 6


def test_routes_not_a_mapping():
    problem = only_problem(ROUTES_BASE.replace("routes:\n", "routes: [demo/echo]\n"))
    assert problem.path == "routes"
    assert problem.line == 5


def test_unknown_middleware():
    text = "providers:\n  - {name: demo, kind: demo}\nmiddlewares:\n  - normalize\n  - cache\n"
    problem = only_problem(text)
    assert problem.path == "middlewares[1]"
    assert problem.line == 5
    assert "cache" in problem.message


def test_middleware_listed_twice_and_not_a_list():
    problem = only_problem("providers:\n  - {name: demo, kind: demo}\nmiddlewares: [normalize, normalize]\n")
    assert problem.path == "middlewares[1]"
    problem = only_problem("providers:\n  - {name: demo, kind: demo}\nmiddlewares: normalize\n")
    assert problem.path == "middlewares"
    assert problem.line == 3


def test_empty_middlewares_allowed():
    assert parse_config("providers:\n  - {name: demo, kind: demo}\nmiddlewares: []\n").middlewares == ()


def test_a_middleware_listed_before_one_it_must_follow_is_refused_with_its_line():
    text = "providers:\n  - {name: demo, kind: demo}\nmiddlewares:\n  - moderate\n  - normalize\n"
    problem = only_problem(text)
    assert problem.path == "middlewares[0]"
    assert problem.line == 4
    assert "'moderate' must come after 'normalize'" in problem.message


def test_a_middleware_without_the_one_it_must_follow_is_refused():
    problem = only_problem("providers:\n  - {name: demo, kind: demo}\nmiddlewares: [ratelimit]\n")
    assert problem.path == "middlewares[0]"
    assert "'ratelimit' needs 'normalize' before it" in problem.message


def test_the_shipped_order_keeps_every_middlewares_constraints():
    from gateway.pipeline import MIDDLEWARES

    config = load_config(DEFAULT_CONFIG)
    for spec in MIDDLEWARES.values():
        assert all(before in MIDDLEWARES for before in spec.after), spec.name
    assert set(config.middlewares) == set(MIDDLEWARES)


def test_a_middlewares_section_is_parsed_by_its_spec_into_its_settings():
    from gateway.moderation_config import ModerationConfig

    config = parse_config("providers:\n  - {name: demo, kind: demo}\nmoderation:\n  output: false\n"
                          "  rules: [{term: secret, action: block}]\n")
    settings = config.settings["moderate"]
    assert isinstance(settings, ModerationConfig) and not settings.output and len(settings.rules.rules) == 1
    default = parse_config("providers:\n  - {name: demo, kind: demo}\n").settings["moderate"]
    assert isinstance(default, ModerationConfig) and not default.active
    problem = only_problem("providers:\n  - {name: demo, kind: demo}\nmoderation: {output: maybe}\n")
    assert (problem.path, problem.line) == ("moderation.output", 3)


# ---------------------------------------------------------------------------------------------- YAML errors


@pytest.mark.parametrize("text,line", [
    ("server:\n  host: a\n  port: 1: 2\nproviders: []\n", 3),
    ("providers:\n\t- x\n", 2),
    ("providers:\n  - name: demo\n    kind: demo\n  bad: [\n", 4),
])
def test_invalid_yaml_reports_a_line(text, line):
    problem = only_problem(text)
    assert problem.path == ""
    assert problem.line == line
    assert "YAML" in problem.message
    assert str(problem).startswith(f"line {line}: ")


# ---------------------------------------------------------------------------------------------- files


def test_load_config_reads_a_file(tmp_path):
    path = tmp_path / "gw.yaml"
    path.write_text("server: {port: 1234}\nproviders:\n  - {name: demo, kind: demo}\n", encoding="utf-8")
    config = load_config(path)
    assert config.server.port == 1234
    assert config.source == str(path)
    assert load_config(str(path)).server.port == 1234


def test_load_config_reports_the_file_in_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("providers:\n  - {name: demo, kind: demo, colour: red}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    assert info.value.problems[0].path == "providers[0].colour"


def test_load_config_missing_file(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.yaml")
    assert len(info.value.problems) == 1
    assert "cannot read" in info.value.problems[0].message


def _unset_provider_keys(monkeypatch):
    for name in ("OPENAI_API_KEY", "GROQ_API_KEY", "PERPLEXITY_API_KEY", "NVIDIA_API_KEY", "TOGETHER_API_KEY",
                 "MISTRAL_API_KEY", "DEEPSEEK_API_KEY", "ANTHROPIC_API_KEY", "GEMINI_API_KEY", "LOCAL_LLM_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


def test_shipped_providers_yaml_loads(monkeypatch):
    _unset_provider_keys(monkeypatch)
    config = load_config(REPO / "providers.yaml")
    assert "demo" in config.providers
    assert config.providers["demo"].enabled
    assert not config.providers["openai"].enabled
    assert config.providers["openai"].missing_env == ("OPENAI_API_KEY",)
    assert config.providers["local"].enabled
    assert config.providers["local"].base_url == "http://127.0.0.1:11434/v1"
    for route, targets in config.routes.items():
        for target in targets:
            assert target.partition("/")[0] in config.providers, (route, target)


def test_embedded_default_config_loads(monkeypatch):
    _unset_provider_keys(monkeypatch)
    assert DEFAULT_CONFIG.is_file()
    config = load_config()
    assert config.source == str(DEFAULT_CONFIG)
    assert config.providers["demo"].enabled
    assert load_config(DEFAULT_CONFIG).providers.keys() == config.providers.keys()


def test_shipped_key_enables_its_provider(monkeypatch):
    _unset_provider_keys(monkeypatch)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    config = load_config()
    assert config.providers["openai"].enabled
    assert config.providers["openai"].api_key == "sk-test"


RESUME_BASE = """
providers:
  - name: demo
    kind: demo
"""


def test_resume_section_defaults_and_values() -> None:
    assert parse_config(RESUME_BASE).resume.backend == "memory"
    config = parse_config(RESUME_BASE + yaml_text("""
        resume:
          backend: redis
          url: redis://127.0.0.1:6390/2
          grace: 2.5
          max_bytes: 4096
          max_total_bytes: 65536
        """))
    assert (config.resume.backend, config.resume.url, config.resume.grace) == ("redis", "redis://127.0.0.1:6390/2", 2.5)
    assert (config.resume.max_bytes, config.resume.max_total_bytes) == (4096, 65536)


@pytest.mark.parametrize(("section", "path", "words"), [
    ("backend: disk", "resume.backend", "memory or redis"),
    ("url: redis://x:6379/0", "resume.url", "only the redis backend"),
    ("grace: -1", "resume.grace", "at least 0"),
    ("max_bytes: 0", "resume.max_bytes", "at least 1"),
    ("max_bytes: 10\n  max_total_bytes: 5", "resume.max_bytes", "not be larger"),
    ("spool: 1", "resume.spool", "unknown"),
])
def test_resume_section_problems_name_their_key(section: str, path: str, words: str) -> None:
    problems = problems_of(RESUME_BASE + "resume:\n  " + section + "\n")
    assert any(p.path == path and words in p.message for p in problems), problems


def test_key_resumable_and_coalesce_defaults() -> None:
    text = RESUME_BASE + yaml_text("""
        keys:
          - id: app
            sha256: "%s"
            resumable: true
            coalesce_ms: 16
          - id: other
            sha256: "%s"
        """) % ("a" * 64, "b" * 64)
    config = parse_config(text)
    assert (config.keys[0].resumable, config.keys[0].coalesce_ms) == (True, 16)
    assert (config.keys[1].resumable, config.keys[1].coalesce_ms) == (False, None)
    bad = text.replace("coalesce_ms: 16", "coalesce_ms: 1001").replace("resumable: true", "resumable: yes please")
    paths = {p.path for p in problems_of(bad)}
    assert {"keys[0].coalesce_ms", "keys[0].resumable"} <= paths
