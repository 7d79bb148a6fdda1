//! Fuzzing as a habit (issue 11 item 9): every input kept in `fuzz/corpus/<target>/` (the
//! minimized corpora) and every crash reproducer in `fuzz/regressions/<target>/` runs through
//! the same function the fuzz target calls, on every `cargo test`. A finding fixed once stays
//! fixed; a corpus that shrank to nothing fails the test.

use std::path::Path;

type Check = fn(&[u8]);

const TARGETS: [(&str, Check); 4] = [
    ("xml_reader", sasl2_fast::fuzzing::stream_reader),
    ("negotiator", sasl2_fast::fuzzing::negotiator),
    ("scram", sasl2_fast::fuzzing::scram),
    ("ht_initiator", sasl2_fast::fuzzing::ht_initiator),
];

fn inputs(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect();
    out.sort();
    out
}

fn replay(kind: &str, min: usize) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind);
    for (target, check) in TARGETS {
        let files = inputs(&root.join(target));
        assert!(
            files.len() >= min,
            "{kind}/{target}: {} inputs, expected at least {min}",
            files.len()
        );
        for (name, data) in files {
            let run = std::panic::catch_unwind(|| check(&data));
            assert!(run.is_ok(), "{name} fails the {target} checks");
        }
    }
}

#[test]
fn minimized_corpora_pass_the_fuzz_checks() {
    replay("corpus", 10);
}

#[test]
fn crash_reproducers_stay_fixed() {
    replay("regressions", 0);
}
