//! One of each, in the workspace's manifests: chrono is the one time library (xmpp-parsers'
//! dates are chrono's), so no crate of the workspace depends on `time` itself (rcgen still
//! brings it in, as a dependency of a dependency); and the host's test client brings its SASL
//! client crate only with the `testing` feature, so a server build does not compile it.

use std::path::PathBuf;

fn manifest(crate_dir: &str) -> toml::Table {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(crate_dir)
        .join("Cargo.toml");
    std::fs::read_to_string(&path)
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every dependency a manifest names, in any dependency section.
fn dependencies(m: &toml::Table) -> Vec<(String, toml::Value)> {
    ["dependencies", "dev-dependencies", "build-dependencies"]
        .into_iter()
        .filter_map(|section| m.get(section).and_then(|s| s.as_table()))
        .flat_map(|t| t.iter().map(|(k, v)| (k.clone(), v.clone())))
        .collect()
}

#[test]
fn chrono_is_the_one_time_library() {
    for dir in [".", "host", "tokio-xmpp-host"] {
        let deps = dependencies(&manifest(dir));
        assert!(
            deps.iter().all(|(name, _)| name != "time"),
            "{dir}/Cargo.toml depends on `time`; use chrono"
        );
    }
    assert!(
        dependencies(&manifest("."))
            .iter()
            .any(|(name, _)| name == "chrono")
    );
}

#[test]
fn the_test_client_is_built_only_for_testing() {
    let host = manifest("host");
    let sasl = host["dependencies"]["sasl"].clone();
    assert_eq!(
        sasl.get("optional").and_then(|o| o.as_bool()),
        Some(true),
        "the sasl client crate must be optional: {sasl}"
    );
    let testing = host["features"]["testing"].as_array().unwrap();
    assert!(testing.iter().any(|f| f.as_str() == Some("dep:sasl")));
    // The root crate's tests and examples drive the host with the client.
    let root_dev = &manifest(".")["dev-dependencies"]["sasl2-fast-host"];
    let features = root_dev["features"].as_array().unwrap();
    assert!(features.iter().any(|f| f.as_str() == Some("testing")));
}
