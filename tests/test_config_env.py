"""`${VAR}` in every scalar field of providers.yaml: the variable's text, typed as YAML would type it when
the value is unquoted and only the variable; an unset variable named in the problem."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings, strategies as st

from gateway.config import ConfigError, parse_config

VAR = "GATEWAY_TEST_ENV_VALUE"
DEMO = "providers:\n  - name: demo\n    kind: demo\n    models: ['${" + VAR + "}']\n"


def _with(value: str):
    os.environ[VAR] = value
    try:
        return parse_config(DEMO, "env.yaml")
    finally:
        del os.environ[VAR]


@settings(max_examples=200, deadline=None)
@given(st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1))
def test_a_quoted_variable_is_its_text_whatever_it_holds(value):
    assert _with(value).providers["demo"].models == (value,)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 65535))
def test_an_unquoted_variable_that_holds_a_number_is_a_number(port):
    os.environ[VAR] = str(port)
    try:
        config = parse_config("server:\n  port: ${" + VAR + "}\n" + DEMO.replace("'${" + VAR + "}'", "echo"), "e")
    finally:
        del os.environ[VAR]
    assert config.server.port == port and isinstance(config.server.port, int)


def test_a_default_is_used_when_the_variable_is_unset():
    os.environ.pop(VAR, None)
    config = parse_config("server:\n  shutdown_grace: ${" + VAR + ":-7.5}\n" + DEMO.replace("'${" + VAR + "}'", "e"),
                          "e")
    assert config.server.shutdown_grace == 7.5


def test_an_unset_variable_is_named_with_its_place():
    os.environ.pop(VAR, None)
    with pytest.raises(ConfigError) as info:
        parse_config(DEMO, "env.yaml")
    assert [(p.path, p.line, p.message) for p in info.value.problems] == \
        [("providers[0].models[0]", 4, f"{VAR} is not set")]
