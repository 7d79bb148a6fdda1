//! README.md, DESIGN.md and docs/*.md name only what exists: repository paths, config keys and
//! `host` subcommands. A renamed file, key or command fails here instead of leaving a document
//! quietly wrong. Nothing is checked against a hand-kept list: paths against the files, keys
//! against the config types themselves (and `plugin.toml`), subcommands against the clap
//! definition of `host`. `config_keys.rs` reads the keys, `markdown.rs` the documents,
//! `checks.rs` applies the rules below.
//!
//! The rules, chosen to be simple enough to predict from the text alone:
//!
//! **Paths.** Every word of a line (prose, code spans and code blocks alike), cut at whitespace
//! and at `` ` ( ) [ ] , ; " ' | = * ``, with trailing `. : ! ?`, a `::item` suffix and a
//! `#anchor` removed. A word with a placeholder or a scheme in it (`< > … $ { } ~ @ % :`) is not
//! a path.
//! - A word with a `/` is a repository path when its first segment is an entry of the
//!   repository's root (`src`, `host`, `docs`, ...) or of the document's own folder
//!   (`perf-data/` in docs/); it must exist. Words whose first segment is neither (`ht_verify/…`
//!   benchmark ids, `tls/cert.pem` under a data_dir, `rustls/src/…`) are not repository paths.
//! - It may be missing when it lies under an entry of the root `.gitignore` (`target/…`,
//!   `examples/data/…`: made by a build or a run), or when it is another project's path: the
//!   name of that project (one of [`OTHER_PROJECTS`]) is written before it on the same line.
//! - A path that starts with `..` must stay inside the repository (the steering repository's
//!   `shared/` is not shipped with this one: docs state the facts they need from it).
//! - An absolute path of two segments or more must be a system path (`/tmp`, `/proc`, `/usr`,
//!   `/etc`, ...); anything else is a path on someone's machine.
//! - A Markdown link `[text](target#anchor)` that is not a URL must name an existing file
//!   inside the repository, relative to the document, and its anchor a heading of that file.
//!
//! **Config keys.** The host's config tables and keys are read from `HostConfig`'s serde
//! definition (a probe deserializer records the field list of every struct on the way down), and
//! `plugin.toml`'s `[options.*]` are keys of `[plugins.fast]` too. A config key is named by:
//! - a code span `[table]` or a dotted code span `table.key` whose first part is a top-level
//!   table of the config (`server`, `accounts`, `plugins`); file names (`server.rs`) are not keys;
//! - a code span `key = value`, or a `key = value` line of a ```` ```toml ```` block: the key
//!   must be in the table in force, which is the block's last `[table]` line, else the table
//!   named in a code span of the nearest heading above (configuration.md's `` ## `[server]` ``),
//!   else any table with fixed keys. A key on a line that names another project (a PostgreSQL
//!   setting) is that project's;
//! - the first cell of a table row under a heading that names a table (configuration.md's key
//!   tables): every code span in it.
//!
//! `[accounts]` takes any key (usernames). A bare word in backquotes (`` `idle_timeout` ``) is
//! not checked: it cannot be told apart from a function name.
//!
//! **`host` subcommands.** A code span or a line of a code block that starts with `host` (or
//! a path ending in `/host`), or that runs `cargo … --example host -- …`, is a `host` command
//! line. Its words after `host` are walked down the clap definition
//! (`sasl2_fast_host::cli::command()`): an option must exist there (and its value is skipped), a
//! lowercase word must be a subcommand while the command has subcommands; the walk stops at
//! anything else (`FILE`, `…`, `|`) or at a command without subcommands (its arguments follow).

mod checks;
mod config_keys;
mod markdown;

use std::path::{Path, PathBuf};

use checks::Checker;

/// Other projects whose files the docs cite. A repository-looking path that does not exist is
/// that project's when one of these names stands before it on the same line; a `key = value`
/// on a line with one of them is that project's setting.
const OTHER_PROJECTS: &[&str] = &[
    "mini-redis",
    "rustls",
    "tower",
    "Prosody",
    "ejabberd",
    "MongooseIM",
    "Openfire",
    "Conversations",
    "Gajim",
    "nbxmpp",
    "xmpp.js",
    "slixmpp",
    "tokio-xmpp",
    "PostgreSQL",
    "ring",
];

/// Top directories of a system: an absolute path elsewhere is one on someone's machine.
const SYSTEM_DIRS: &[&str] = &[
    "bin", "dev", "etc", "lib", "opt", "proc", "run", "sys", "tmp", "usr", "var",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn documents() -> Vec<PathBuf> {
    let mut docs = vec![PathBuf::from("README.md"), PathBuf::from("DESIGN.md")];
    let mut in_docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .filter_map(|e| e.ok())
        .map(|e| PathBuf::from("docs").join(e.file_name()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    in_docs.sort();
    docs.extend(in_docs);
    docs
}

#[test]
fn the_docs_name_only_paths_keys_and_commands_that_exist() {
    let checker = Checker::new();
    let mut problems = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(root().join(&doc)).expect("document");
        problems.extend(checker.check(&doc, &text));
    }
    assert!(
        problems.is_empty(),
        "{} names that do not exist:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

/// The checks read the real config types and the real clap definition: what they found must
/// include what every config and command line of the project uses, or the probe is broken.
#[test]
fn the_config_and_commands_are_read_from_the_code() {
    let checker = Checker::new();
    let c = &checker.config;
    for (table, key) in [
        ("server", "listen"),
        ("server", "data_dir"),
        ("plugins", "fast"),
        ("plugins.fast", "token_ttl"),
        ("plugins.fast", "sweep_interval"),
    ] {
        assert!(c.has_key(table, key), "{table}.{key} in {c:?}");
    }
    assert!(c.has_key("accounts", "alice"), "[accounts] takes usernames");
    assert!(!c.has_key("server", "token_ttl"));
    assert!(!c.has_key_anywhere("bogus_key"));
    assert!(
        checker
            .check_host_command("host ctl --config FILE stats --json")
            .is_empty()
    );
}

/// Each kind of wrong name planted in a document is reported, naming the line.
#[test]
fn a_planted_wrong_path_key_and_subcommand_are_reported() {
    let checker = Checker::new();
    let doc = Path::new("docs/planted.md");
    let text = "\
# Planted

See `src/sasl2/no_such_file.rs` and src/fast/ht.rs (that one exists), the steering repo's
`../../shared/docs/peers.md` and `/home/dev/sasl2-fast/DESIGN.md`; [a link](nowhere.md) and
[another](protocol.md#no-such-heading). mini-redis (`src/db.rs`) is another project's.

Set `max_connectoins = 10` in `[server]`, or `server.idle_timeot`, or `[plugins.slow]`.

```toml
[server]
domain = \"localhost\"
listen_tsl = \"127.0.0.1:5223\"
```

Run `host ctl --config FILE revoke-all USER` or `host passwd --config FILE USER`, then
`cargo run --example host -- clinets --config FILE` and `host --confg FILE`.

## `[server]`

| key | default |
|---|---|
| `listen` | required |
| `max_stanza_byte` | 65536 |

## `[accounts]`

`name = \"password\"` pairs; PostgreSQL's `fsync = on` is not ours.
";
    let problems = checker.check(doc, text);
    let expected = [
        "docs/planted.md:3: `src/sasl2/no_such_file.rs` does not exist",
        "docs/planted.md:4: `../../shared/docs/peers.md` lies outside the repository",
        "docs/planted.md:4: `/home/dev/sasl2-fast/DESIGN.md` is a path on someone's machine",
        "docs/planted.md:4: link `nowhere.md`: no file docs/nowhere.md",
        "docs/planted.md:5: link `protocol.md#no-such-heading`: docs/protocol.md has no heading",
        "docs/planted.md:7: key `max_connectoins` is not in the host's config",
        "docs/planted.md:7: key `server.idle_timeot` is not in the host's config",
        "docs/planted.md:7: table `plugins.slow` is not in the host's config",
        "docs/planted.md:12: key `listen_tsl` is not in the host's config [server]",
        "docs/planted.md:15: `host ctl` has no subcommand `revoke-all`",
        "docs/planted.md:16: `host` has no subcommand `clinets`",
        "docs/planted.md:16: `host` has no option `--confg`",
        "docs/planted.md:23: key `max_stanza_byte` is not in the host's config [server]",
    ];
    for e in expected {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "not reported: {e}\nreported:\n{}",
            problems.join("\n")
        );
    }
    assert_eq!(problems.len(), expected.len(), "{}", problems.join("\n"));
}
