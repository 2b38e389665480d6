"""Settings come from the environment, typed, and are loud about what is missing or wrong."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphql_api.settings import Settings, SettingsError


def test_from_env_reads_every_setting(tmp_path: Path) -> None:
    env = {
        "HYBRIDREC_BUNDLE_ROOT": str(tmp_path / "b"),
        "HYBRIDREC_REDIS_URL": "redis://localhost:6379/1",
        "HYBRIDREC_API_KEYS": "a, b,,",
        "HYBRIDREC_ADMIN_KEYS": "root",
        "HYBRIDREC_REQUIRE_KEY_FOR_QUERIES": "true",
        "HYBRIDREC_CORS_ORIGINS": "https://x.example,https://y.example",
        "HYBRIDREC_MAX_DEPTH": "7",
        "HYBRIDREC_MAX_ALIASES": "3",
        "HYBRIDREC_MAX_TOKENS": "500",
        "HYBRIDREC_MAX_DIRECTIVES": "9",
        "HYBRIDREC_MAX_COST": "1234",
        "HYBRIDREC_DEADLINE": "2.5",
        "HYBRIDREC_FIELD_SUGGESTIONS": "true",
        "HYBRIDREC_INTROSPECTION": "false",
        "HYBRIDREC_RATE_LIMIT": "12.5",
        "HYBRIDREC_CACHE_TTL": "0",
        "HYBRIDREC_PLAIN_EXECUTOR": "false",
    }
    s = Settings.from_env(env)
    assert s.bundle_root == tmp_path / "b" and s.events_dir is None and s.redis_url == "redis://localhost:6379/1"
    assert s.api_keys == {"a", "b"} and s.admin_keys == {"root"} and s.require_key_for_queries
    assert s.cors_origins == ("https://x.example", "https://y.example")
    assert (s.limits.max_depth, s.limits.max_aliases, s.limits.max_tokens, s.limits.introspection) == (7, 3, 500, False)
    assert (s.limits.max_directives, s.limits.max_cost, s.limits.deadline) == (9, 1234, 2.5)
    assert s.limits.field_suggestions and not s.limits.suggestions  # never while introspection is off
    assert s.rate_limit == 12.5 and s.burst == 25 and s.cache_ttl == 0
    assert s.plain_executor is False and Settings.from_env({"HYBRIDREC_BUNDLE_ROOT": "b",
                                                            "HYBRIDREC_REDIS_URL": "redis://x",
                                                            "HYBRIDREC_API_KEYS": "k"}).plain_executor


def test_bundle_root_is_required() -> None:
    with pytest.raises(SettingsError, match="HYBRIDREC_BUNDLE_ROOT is required but not set"):
        Settings.from_env({"HYBRIDREC_EVENTS_DIR": "/tmp/e"})


def test_events_dir_is_required_without_redis() -> None:
    with pytest.raises(SettingsError, match="HYBRIDREC_EVENTS_DIR is required when HYBRIDREC_REDIS_URL is not set"):
        Settings.from_env({"HYBRIDREC_BUNDLE_ROOT": "/tmp/b"})


@pytest.mark.parametrize(("name", "value"), [("MAX_DEPTH", "deep"), ("INTROSPECTION", "maybe"), ("RATE_LIMIT", "-1"),
                                             ("MAX_DEPTH", "0"), ("MAX_COST", "0"), ("DEADLINE", "0")])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    env = {"HYBRIDREC_BUNDLE_ROOT": "/tmp/b", "HYBRIDREC_EVENTS_DIR": "/tmp/e", f"HYBRIDREC_{name}": value}
    with pytest.raises(SettingsError, match=name.lower() if value == "0" else f"HYBRIDREC_{name}"):
        Settings.from_env(env)


def test_env_file_is_read_after_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "api.env"
    env_file.write_text("HYBRIDREC_BUNDLE_ROOT=/from/file\nHYBRIDREC_EVENTS_DIR=/e\nHYBRIDREC_MAX_DEPTH=4\n")
    s = Settings.from_env({"HYBRIDREC_ENV_FILE": str(env_file), "HYBRIDREC_MAX_DEPTH": "9", "HYBRIDREC_DEV": "true"})
    assert s.bundle_root == Path("/from/file") and s.limits.max_depth == 9
    with pytest.raises(SettingsError, match="no such file"):
        Settings.from_env({"HYBRIDREC_ENV_FILE": str(tmp_path / "missing.env")})


def test_bundle_root_may_be_a_url(tmp_path: Path) -> None:
    env = {"HYBRIDREC_BUNDLE_ROOT": "memory://shared/bundles", "HYBRIDREC_EVENTS_DIR": "/tmp/e",
           "HYBRIDREC_BUNDLE_CACHE": str(tmp_path / "cache"), "HYBRIDREC_DEV": "true"}
    s = Settings.from_env(env)
    assert s.bundle_root == "memory://shared/bundles" and s.bundle_cache == tmp_path / "cache"
    assert Settings.from_env({**env, "HYBRIDREC_BUNDLE_CACHE": ""}).bundle_cache is None
    with pytest.raises(SettingsError, match="HYBRIDREC_BUNDLE_ROOT=nope://b: Protocol not known"):
        Settings.from_env({**env, "HYBRIDREC_BUNDLE_ROOT": "nope://b"})


# -- keys: fail closed, scopes, binding ------------------------------------------------------------------

BASE = {"HYBRIDREC_BUNDLE_ROOT": "/tmp/b", "HYBRIDREC_EVENTS_DIR": "/tmp/e"}


def test_no_keys_refuses_to_start_unless_in_development_mode() -> None:
    with pytest.raises(SettingsError, match="no API keys: set HYBRIDREC_API_KEYS .* HYBRIDREC_DEV=true"):
        Settings.from_env(BASE)
    dev = Settings.from_env({**BASE, "HYBRIDREC_DEV": "true"})
    assert dev.dev_mode and not dev.keys_configured
    assert not Settings.from_env({**BASE, "HYBRIDREC_API_KEYS": "k" * 20}).dev_mode


def test_keys_carry_scopes_and_may_be_bound_to_a_user() -> None:
    s = Settings.from_env({**BASE, "HYBRIDREC_API_KEYS": "front-end-key-0001:read, writer-key-00000001@42, plainkey",
                           "HYBRIDREC_ADMIN_KEYS": "ops-key-000000001"})
    reader, writer, plain, ops = (s.key(k) for k in ("front-end-key-0001", "writer-key-00000001", "plainkey",
                                                      "ops-key-000000001"))
    assert reader.scopes == {"read"} and not reader.allows("write", "42")
    assert writer.scopes == {"read", "write"} and writer.user == "42"
    assert writer.allows("write", "42") and not writer.allows("write", "43") and not writer.allows("admin", "42")
    assert plain.allows("write", "anyone") and not plain.allows("admin")
    assert ops.scopes == {"read", "write", "admin"} and ops.allows("admin", "7")
    assert s.key("guess") is None and s.key(None) is None
    assert s.weak_keys() == [plain.id]  # shorter than 16 characters: warned about at start
    assert "plainkey" not in repr(s) and "plainkey" not in plain.id


@pytest.mark.parametrize(("entry", "message"), [("secret-7:fly", r"unknown scopes \['fly'\]"),
                                                ("secret-7:", "unknown scopes"),
                                                ("secret-7@", "'@' must be followed by the user id"),
                                                ("secret 7", "letters, digits")])
def test_bad_key_entries_are_named_without_the_key(entry: str, message: str) -> None:
    with pytest.raises(SettingsError, match=message) as err:
        Settings.from_env({**BASE, "HYBRIDREC_API_KEYS": entry})
    assert "secret" not in str(err.value)
