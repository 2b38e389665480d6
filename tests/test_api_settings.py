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
        "HYBRIDREC_INTROSPECTION": "false",
        "HYBRIDREC_RATE_LIMIT": "12.5",
        "HYBRIDREC_CACHE_TTL": "0",
    }
    s = Settings.from_env(env)
    assert s.bundle_root == tmp_path / "b" and s.events_dir is None and s.redis_url == "redis://localhost:6379/1"
    assert s.api_keys == {"a", "b"} and s.admin_keys == {"root"} and s.require_key_for_queries
    assert s.cors_origins == ("https://x.example", "https://y.example")
    assert (s.limits.max_depth, s.limits.max_aliases, s.limits.max_tokens, s.limits.introspection) == (7, 3, 500, False)
    assert s.rate_limit == 12.5 and s.burst == 25 and s.cache_ttl == 0


def test_bundle_root_is_required() -> None:
    with pytest.raises(SettingsError, match="HYBRIDREC_BUNDLE_ROOT is required but not set"):
        Settings.from_env({"HYBRIDREC_EVENTS_DIR": "/tmp/e"})


def test_events_dir_is_required_without_redis() -> None:
    with pytest.raises(SettingsError, match="HYBRIDREC_EVENTS_DIR is required when HYBRIDREC_REDIS_URL is not set"):
        Settings.from_env({"HYBRIDREC_BUNDLE_ROOT": "/tmp/b"})


@pytest.mark.parametrize(("name", "value"), [("MAX_DEPTH", "deep"), ("INTROSPECTION", "maybe"), ("RATE_LIMIT", "-1"),
                                             ("MAX_DEPTH", "0")])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    env = {"HYBRIDREC_BUNDLE_ROOT": "/tmp/b", "HYBRIDREC_EVENTS_DIR": "/tmp/e", f"HYBRIDREC_{name}": value}
    with pytest.raises(SettingsError, match=name.split("_")[-1].lower() if name == "MAX_DEPTH" and value == "0"
                       else f"HYBRIDREC_{name}"):
        Settings.from_env(env)


def test_env_file_is_read_after_the_environment(tmp_path: Path) -> None:
    env_file = tmp_path / "api.env"
    env_file.write_text("HYBRIDREC_BUNDLE_ROOT=/from/file\nHYBRIDREC_EVENTS_DIR=/e\nHYBRIDREC_MAX_DEPTH=4\n")
    s = Settings.from_env({"HYBRIDREC_ENV_FILE": str(env_file), "HYBRIDREC_MAX_DEPTH": "9"})
    assert s.bundle_root == Path("/from/file") and s.limits.max_depth == 9
    with pytest.raises(SettingsError, match="no such file"):
        Settings.from_env({"HYBRIDREC_ENV_FILE": str(tmp_path / "missing.env")})


def test_bundle_root_may_be_a_url(tmp_path: Path) -> None:
    env = {"HYBRIDREC_BUNDLE_ROOT": "memory://shared/bundles", "HYBRIDREC_EVENTS_DIR": "/tmp/e",
           "HYBRIDREC_BUNDLE_CACHE": str(tmp_path / "cache")}
    s = Settings.from_env(env)
    assert s.bundle_root == "memory://shared/bundles" and s.bundle_cache == tmp_path / "cache"
    assert Settings.from_env({**env, "HYBRIDREC_BUNDLE_CACHE": ""}).bundle_cache is None
    with pytest.raises(SettingsError, match="HYBRIDREC_BUNDLE_ROOT=nope://b: Protocol not known"):
        Settings.from_env({**env, "HYBRIDREC_BUNDLE_ROOT": "nope://b"})
