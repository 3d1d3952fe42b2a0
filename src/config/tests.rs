//! Unit tests of `src/config.rs`.

use super::*;
use std::collections::HashMap;

fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

#[test]
fn defaults_load_and_validate() {
    let s = Settings::load(None, env(&[])).unwrap();
    assert_eq!(s.http.port, 36789);
    assert_eq!(s.redis.url, "redis://127.0.0.1:6379");
    assert_eq!(s.redis.shards, 16);
}

#[test]
fn file_then_env_override() {
    let dir = std::env::temp_dir().join(format!("dtx-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "[http]\nport = 1234\n[redis]\nshards = 4\n").unwrap();
    let s = Settings::load(
        Some(&file),
        env(&[("DTX_HTTP_PORT", "4321"), ("DTX_REDIS_URL", "redis://h:1")]),
    )
    .unwrap();
    assert_eq!(s.http.port, 4321);
    assert_eq!(s.redis.shards, 4);
    assert_eq!(s.redis.url, "redis://h:1");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_values_are_named() {
    let e = Settings::load(None, env(&[("DTX_HTTP_PORT", "x")])).unwrap_err();
    assert!(e.to_string().contains("DTX_HTTP_PORT"), "{e}");
    let e = Settings::load(None, env(&[("DTX_REDIS_SHARDS", "0")])).unwrap_err();
    assert!(e.to_string().contains("redis.shards"), "{e}");
    let dir = std::env::temp_dir().join(format!("dtx-cfg2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("c.toml");
    std::fs::write(&file, "[http]\nprot = 1\n").unwrap();
    let e = Settings::load(Some(&file), env(&[])).unwrap_err();
    assert!(e.to_string().contains("http.prot"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn tls_settings_are_checked() {
    let refusal =
        |pairs: &[(&str, &str)]| Settings::load(None, env(pairs)).unwrap_err().to_string();
    let e = refusal(&[("DTX_REDIS_URL", "rediss://h:1/#insecure")]);
    assert!(
        e.contains("#insecure") && e.contains("redis.tls_ca_file"),
        "{e}"
    );
    let e = refusal(&[("DTX_REDIS_TLS_CA_FILE", "/ca.pem")]);
    assert!(e.contains("TLS URLs only"), "{e}");
    let e = refusal(&[
        ("DTX_REDIS_URL", "rediss://h:1"),
        ("DTX_REDIS_TLS_CERT_FILE", "/c.pem"),
    ]);
    assert!(e.contains("go together"), "{e}");
    let tls = [
        ("DTX_REDIS_URL", "rediss+cluster://h:1,h:2"),
        ("DTX_REDIS_TLS_CA_FILE", "/ca.pem"),
        ("DTX_REDIS_TLS_CERT_FILE", "/c.pem"),
        ("DTX_REDIS_TLS_KEY_FILE", "/c.key"),
    ];
    let s = Settings::load(None, env(&tls)).unwrap();
    assert_eq!(s.redis.tls_key_file, "/c.key");
}

#[test]
fn tokens_never_show_in_debug() {
    let s = Settings::load(
        None,
        env(&[
            ("DTX_AUTH_TOKENS", "s3cret, other"),
            ("DTX_AUTH_READ_TOKENS", "r3ad"),
        ]),
    )
    .unwrap();
    let shown = format!("{s:?}");
    assert!(
        !shown.contains("s3cret") && !shown.contains("r3ad"),
        "{shown}"
    );
    assert!(shown.contains("2 configured"));
    assert_eq!(s.auth.full(), ["s3cret", "other"]);
}

#[test]
fn passwords_are_redacted() {
    assert_eq!(
        redact_url("redis://user:secret@h:6379/0"),
        "redis://user:***@h:6379/0"
    );
    assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
}

#[test]
fn readme_lists_every_setting() {
    let readme = include_str!("../../README.md");
    for (name, _) in Settings::env_vars() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md lacks {name}"
        );
    }
}

#[test]
fn every_setting_has_an_env_var() {
    let vars = Settings::env_vars();
    assert!(vars.iter().any(|(n, _)| n == "DTX_REDIS_URL"));
    assert!(vars.iter().any(|(n, _)| n == "DTX_HTTP_PORT"));
    assert!(vars.len() >= 20);
}
