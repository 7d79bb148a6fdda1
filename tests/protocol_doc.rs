//! docs/protocol.md stays true: every test it names exists and cites the rule, every server MUST
//! has a test that cites it, and §10's coverage summary matches the entries of §5.
//!
//! The project's standard is that every MUST of docs/protocol.md that concerns a server has a
//! test. The entries of §5 say which tests pin each rule ("Tests:" lists test functions whose doc
//! comment or body cites the id); this file checks those claims against the sources, so a renamed
//! test, a dropped citation or a new rule without a test fails here instead of leaving the
//! document quietly wrong.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn protocol_md() -> String {
    std::fs::read_to_string(root().join("docs/protocol.md")).expect("docs/protocol.md")
}

/// One rule entry of §5: `- **ID** · strength · source — statement`, then its indented lines.
#[derive(Debug)]
struct Rule {
    id: String,
    strength: String,
    /// The whole entry, joined into one line.
    text: String,
}

/// What the entry says pins the rule.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Coverage {
    /// "Tests:": test functions that cite the id.
    Cited,
    /// "Exercised (id not cited) by".
    Exercised,
    /// A client rule whose server-side duty is tested ("Server side exercised by").
    ServerSide,
    NotPinned,
}

impl Rule {
    fn family(&self) -> &str {
        self.id.split('-').next().unwrap_or_default()
    }

    /// The backquoted `path::function` items after `label`, up to the next ` · ` clause.
    fn items_after(&self, label: &str) -> Vec<(String, String)> {
        let Some(start) = self.text.find(label) else {
            return Vec::new();
        };
        let rest = &self.text[start + label.len()..];
        let clause = rest.split(" · ").next().unwrap_or_default();
        clause
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|item| {
                let (path, function) = item.rsplit_once("::")?;
                (path.ends_with(".rs") && !function.contains(' '))
                    .then(|| (path.to_owned(), function.to_owned()))
            })
            .collect()
    }

    fn cited_tests(&self) -> Vec<(String, String)> {
        self.items_after("Tests:")
    }

    fn coverage(&self) -> Coverage {
        if !self.cited_tests().is_empty() {
            Coverage::Cited
        } else if self.text.contains("Exercised (id not cited) by") {
            Coverage::Exercised
        } else if self.text.contains("Server side exercised by") {
            Coverage::ServerSide
        } else {
            Coverage::NotPinned
        }
    }

    /// The strength split into its parts ("MUST NOT (C) / MUST (S)"), each with the party that
    /// applies to it: an annotation covers the unannotated parts before it ("MAY / MUST / SHOULD
    /// (C)" is all client); parts with none are the server's.
    fn parts(&self) -> Vec<(String, String)> {
        let mut parts = Vec::new();
        let mut pending = Vec::new();
        for part in self.strength.split(" / ") {
            let part = part.trim();
            match part.split_once(" (") {
                Some((keyword, party)) => {
                    let party = party.trim_end_matches(')').to_owned();
                    for k in pending.drain(..) {
                        parts.push((k, party.clone()));
                    }
                    parts.push((keyword.to_owned(), party));
                }
                None => pending.push(part.to_owned()),
            }
        }
        parts.extend(pending.into_iter().map(|k| (k, String::new())));
        parts
    }

    /// A MUST, MUST NOT, SHALL or REQUIRED that the server (or both sides) must keep.
    fn is_server_must(&self) -> bool {
        self.parts().iter().any(|(keyword, party)| {
            let binding = ["MUST", "SHALL", "REQUIRED"]
                .iter()
                .any(|k| keyword.starts_with(k));
            binding && party != "C"
        })
    }

    fn is_client_rule(&self) -> bool {
        let parts = self.parts();
        self.strength.starts_with("client rules")
            || (!parts.is_empty() && parts.iter().all(|(_, party)| party == "C"))
    }
}

/// The rule entries of §5, in document order.
fn rules(doc: &str) -> Vec<Rule> {
    let start = doc.find("\n## 5. Rules").expect("§5");
    let end = doc[start..].find("\n## 6.").expect("§6") + start;
    let mut rules: Vec<Rule> = Vec::new();
    let mut in_entry = false;
    for line in doc[start..end].lines() {
        if let Some(rest) = line.strip_prefix("- **") {
            let (id, rest) = rest.split_once("** · ").expect("`- **ID** · ...`");
            // The strength ends at the next field separator: ` · ` before the source or
            // ` — ` before the statement (the Z rules name no source).
            let cut = [rest.find(" · "), rest.find(" — ")]
                .into_iter()
                .flatten()
                .min()
                .expect("strength");
            rules.push(Rule {
                id: id.to_owned(),
                strength: rest[..cut].to_owned(),
                text: line.to_owned(),
            });
            in_entry = true;
        } else if in_entry && line.starts_with("  ") {
            let rule = rules.last_mut().expect("entry");
            rule.text.push(' ');
            rule.text.push_str(line.trim());
        } else {
            in_entry = false;
        }
    }
    rules
}

/// True if `text` names `id` on its own: `F-3` in "F-3:" or "(F-3)", not in "F-30" or "ZF-3".
fn cites(text: &str, id: &str) -> bool {
    text.match_indices(id).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + id.len()..].chars().next();
        !before.is_some_and(|c| c.is_alphanumeric() || c == '-' || c == '_')
            && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The source of function `name` in `file`: its doc comment and attributes, signature and body.
fn function_source(file: &Path, name: &str) -> Option<String> {
    let src = std::fs::read_to_string(file).ok()?;
    let lines: Vec<&str> = src.lines().collect();
    let start = lines.iter().position(|l| {
        let l = l.trim_start();
        let l = l.strip_prefix("pub ").unwrap_or(l);
        let l = l.strip_prefix("async ").unwrap_or(l);
        l.strip_prefix("fn ")
            .and_then(|r| r.strip_prefix(name))
            .is_some_and(|r| r.starts_with('(') || r.starts_with('<'))
    })?;
    let mut first = start;
    while first > 0 {
        let l = lines[first - 1].trim_start();
        if l.starts_with("///") || l.starts_with("#[") || l.starts_with("//") {
            first -= 1;
        } else {
            break;
        }
    }
    // The body: up to the brace that closes the first one opened after the signature.
    // Braces inside string and char literals would confuse the count; test bodies that cite
    // rules keep theirs balanced, and a miscount only makes the excerpt longer.
    let mut depth = 0usize;
    let mut opened = false;
    let mut last = lines.len() - 1;
    'lines: for (i, l) in lines.iter().enumerate().skip(start) {
        let code = l.split("//").next().unwrap_or_default();
        for c in code.chars() {
            match c {
                '{' => {
                    depth += 1;
                    opened = true;
                }
                '}' => {
                    depth = depth.saturating_sub(1);
                    if opened && depth == 0 {
                        last = i;
                        break 'lines;
                    }
                }
                _ => {}
            }
        }
    }
    Some(lines[first..=last].join("\n"))
}

#[test]
fn every_test_named_in_protocol_md_exists_and_cites_its_rule() {
    let doc = protocol_md();
    let rules = rules(&doc);
    assert!(rules.len() > 100, "parsed only {} rules", rules.len());
    let mut problems = Vec::new();
    for rule in &rules {
        for (path, function) in rule.cited_tests() {
            match function_source(&root().join(&path), &function) {
                None => problems.push(format!("{}: {path}::{function} not found", rule.id)),
                Some(source) if !cites(&source, &rule.id) => problems.push(format!(
                    "{}: {path}::{function} does not cite {} in its doc comment or body",
                    rule.id, rule.id
                )),
                Some(_) => {}
            }
        }
        for label in ["Exercised (id not cited) by", "Server side exercised by"] {
            for (path, function) in rule.items_after(label) {
                if function_source(&root().join(&path), &function).is_none() {
                    problems.push(format!("{}: {path}::{function} not found", rule.id));
                }
            }
        }
        let says_not_pinned = rule.text.contains("Not pinned by a");
        if says_not_pinned != (rule.coverage() == Coverage::NotPinned) {
            problems.push(format!(
                "{}: says {}\"Not pinned by a test\" but lists {:?}",
                rule.id,
                if says_not_pinned { "" } else { "nothing of " },
                rule.coverage()
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_server_must_has_a_test_that_cites_it() {
    let doc = protocol_md();
    let missing: Vec<String> = rules(&doc)
        .iter()
        .filter(|r| r.is_server_must() && r.coverage() != Coverage::Cited)
        .map(|r| format!("{} ({}): {:?}", r.id, r.strength, r.coverage()))
        .collect();
    assert!(
        missing.is_empty(),
        "server MUSTs without a citing test:\n{}",
        missing.join("\n")
    );
}

/// The ids listed after `label` in §10 (each bullet is one line of ids after a colon).
fn summary_ids(summary: &str, label: &str) -> Vec<String> {
    let at = summary
        .find(label)
        .unwrap_or_else(|| panic!("§10 has no line {label:?}"));
    // A bullet ends at the next bullet or at the blank line after the list.
    let bullet = summary[at..]
        .split(['\n'])
        .take_while(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    let bullet = bullet.split(" - ").next().unwrap_or_default();
    let list = bullet.split_once("):").map_or("", |(_, l)| l);
    list.split(',')
        .map(|s| s.trim().trim_end_matches('.'))
        .map(|s| s.trim_end_matches(" (C)").to_owned())
        .filter(|s| !s.is_empty() && s != "none")
        .collect()
}

/// The number in bold after `label` in §10.
fn summary_count(summary: &str, label: &str) -> usize {
    let at = summary
        .find(label)
        .unwrap_or_else(|| panic!("§10 has no line {label:?}"));
    summary[at + label.len()..]
        .split("**")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no **count** after {label:?}"))
}

#[test]
fn section_10_summarises_the_entries() {
    let doc = protocol_md();
    let rules = rules(&doc);
    let start = doc.find("\n## 10.").expect("§10");
    let end = doc[start..].find("\n## 11.").expect("§11") + start;
    let summary = doc[start..end].replace("\n  ", " ");

    let mut families: BTreeMap<&str, usize> = BTreeMap::new();
    for r in &rules {
        *families.entry(r.family()).or_default() += 1;
    }
    assert_eq!(
        summary_count(&summary, "Rule ids:"),
        rules.len(),
        "§10 total"
    );
    for (family, n) in &families {
        assert!(
            summary.contains(&format!("{family} {n}")),
            "§10 should count {n} {family} rules"
        );
    }
    let with = |c: Coverage| -> Vec<String> {
        rules
            .iter()
            .filter(|r| r.coverage() == c)
            .map(|r| r.id.clone())
            .collect()
    };
    assert_eq!(
        summary_count(&summary, "Cited by at least one test function:"),
        with(Coverage::Cited).len(),
        "§10: rules with a citing test"
    );
    assert_eq!(
        summary_ids(&summary, "Not cited by any test, but exercised"),
        with(Coverage::Exercised),
        "§10: exercised, not cited"
    );
    assert_eq!(
        summary_ids(
            &summary,
            "Client rules whose server-side counterpart is tested"
        ),
        with(Coverage::ServerSide),
        "§10: client rules tested from the server's side"
    );
    let not_pinned = with(Coverage::NotPinned);
    assert_eq!(
        summary_ids(&summary, "Not pinned by any test"),
        not_pinned,
        "§10: not pinned"
    );
    // Each not-pinned rule is marked (C) in §10 exactly when it is a client rule.
    for r in rules.iter().filter(|r| r.coverage() == Coverage::NotPinned) {
        let marked = summary.contains(&format!("{} (C)", r.id));
        assert_eq!(
            marked,
            r.is_client_rule(),
            "§10: {} ({}) client mark",
            r.id,
            r.strength
        );
    }
}

#[test]
fn the_checker_reads_strengths_and_citations_as_meant() {
    let rule = |strength: &str| Rule {
        id: "X-1".into(),
        strength: strength.into(),
        text: String::new(),
    };
    assert!(rule("MUST (S)").is_server_must());
    assert!(rule("MUST NOT").is_server_must());
    assert!(rule("REQUIRED / MUST").is_server_must());
    assert!(rule("MUST NOT (C) / MUST (S)").is_server_must());
    assert!(rule("MUST (S/C)").is_server_must());
    assert!(!rule("MUST (C)").is_server_must());
    assert!(!rule("MAY / MUST / SHOULD (C)").is_server_must());
    assert!(!rule("SHOULD (S) / MAY (C)").is_server_must());
    assert!(rule("MAY / MUST / SHOULD (C)").is_client_rule());
    assert!(!rule("MUST NOT (C) / MUST (S)").is_client_rule());
    assert!(cites("/// F-3: one round trip", "F-3"));
    assert!(cites("(F-3)", "F-3"));
    assert!(!cites("F-30", "F-3"));
    assert!(!cites("ZF-3", "F-3"));
    let entry = Rule {
        id: "X-1".into(),
        strength: "MUST".into(),
        text: "- **X-1** · MUST · s — t. - Tests: `tests/a.rs::one`; `src/b.rs::two` · \
               Implemented in `src/c.rs`."
            .into(),
    };
    assert_eq!(
        entry.cited_tests(),
        vec![
            ("tests/a.rs".to_owned(), "one".to_owned()),
            ("src/b.rs".to_owned(), "two".to_owned())
        ]
    );
    assert_eq!(entry.coverage(), Coverage::Cited);
}
