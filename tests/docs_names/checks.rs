//! The checks of one document: paths, links, config keys and `host` command lines (the rules
//! are in the crate docs of `main.rs`).

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use crate::config_keys::ConfigTables;
use crate::markdown::{Kind, Line, anchors, heading_table, read_lines, table_name};
use crate::{OTHER_PROJECTS, SYSTEM_DIRS, root};

/// What the documents are checked against: the repository's files, the config types and the
/// `host` command line.
pub struct Checker {
    root: PathBuf,
    /// The names at the repository's root: a word starting with one is a repository path.
    root_entries: BTreeSet<String>,
    /// The root `.gitignore`'s anchored entries: made by a build or a run.
    ignored: Vec<PathBuf>,
    pub config: ConfigTables,
    /// `host`'s clap definition, built (so `--help` and `--version` are in it).
    host: clap::Command,
}

impl Checker {
    pub fn new() -> Self {
        let root = root();
        let root_entries = entries(&root);
        let ignored = std::fs::read_to_string(root.join(".gitignore"))
            .expect(".gitignore")
            .lines()
            .filter_map(|l| l.trim().strip_prefix('/'))
            .map(PathBuf::from)
            .collect();
        let mut host = sasl2_fast_host::cli::command();
        host.build();
        Checker {
            root,
            root_entries,
            ignored,
            config: ConfigTables::load(),
            host,
        }
    }

    /// The problems of one document, `doc` being its path relative to the repository.
    pub fn check(&self, doc: &Path, text: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let dir = doc.parent().unwrap_or(Path::new(""));
        for line in read_lines(text) {
            let mut say =
                |what: String| problems.push(format!("{}:{}: {what}", doc.display(), line.number));
            for word in path_words(line.text) {
                if let Err(e) = self.check_path(dir, line.text, &word) {
                    say(e);
                }
            }
            for e in self.check_links(doc, line.text) {
                say(e);
            }
            for e in self.check_keys(&line) {
                say(e);
            }
            let commands: Vec<&str> = match line.kind {
                Kind::Code(_) => vec![line.text],
                Kind::Prose => line.spans.iter().map(String::as_str).collect(),
                Kind::Fence => Vec::new(),
            };
            for command in commands {
                for e in self.check_host_command(command) {
                    say(e);
                }
            }
        }
        problems
    }

    fn check_path(&self, dir: &Path, line: &str, word: &str) -> Result<(), String> {
        if let Some(absolute) = word.strip_prefix('/') {
            let segments: Vec<&str> = absolute.split('/').filter(|s| !s.is_empty()).collect();
            if segments.len() >= 2 && !SYSTEM_DIRS.contains(&segments[0]) {
                return Err(format!(
                    "`{word}` is a path on someone's machine; name the repository path"
                ));
            }
            return Ok(());
        }
        if !word.contains('/') {
            return Ok(());
        }
        let first = word.split('/').next().unwrap_or_default();
        let relative = if first == ".." || first == "." {
            dir.join(word)
        } else if self.root_entries.contains(first) {
            PathBuf::from(word)
        } else if !dir.as_os_str().is_empty() && entries(&self.root.join(dir)).contains(first) {
            dir.join(word)
        } else {
            return Ok(());
        };
        let Some(relative) = normalize(&relative) else {
            return Err(format!(
                "`{word}` lies outside the repository (state the fact it should support instead)"
            ));
        };
        if self.root.join(&relative).exists()
            || self.ignored.iter().any(|i| relative.starts_with(i))
        {
            return Ok(());
        }
        if names_another_project(&line[..line.find(word).unwrap_or(0)]) {
            return Ok(());
        }
        Err(format!("`{word}` does not exist in the repository"))
    }

    fn check_links(&self, doc: &Path, line: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let dir = doc.parent().unwrap_or(Path::new(""));
        for (start, _) in line.match_indices("](") {
            let rest = &line[start + 2..];
            let Some(end) = rest.find(')') else { continue };
            let target = &rest[..end];
            if target.contains("://") || target.starts_with("mailto:") || target.contains(' ') {
                continue;
            }
            let (file, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if file.is_empty() {
                doc.to_path_buf()
            } else {
                match normalize(&dir.join(file)) {
                    Some(f) => f,
                    None => {
                        problems.push(format!("link `{target}` leaves the repository"));
                        continue;
                    }
                }
            };
            let Ok(text) = std::fs::read_to_string(self.root.join(&file)) else {
                if !self.root.join(&file).exists() {
                    problems.push(format!("link `{target}`: no file {}", file.display()));
                }
                continue;
            };
            if !anchor.is_empty()
                && file.extension().is_some_and(|e| e == "md")
                && !anchors(&text).contains(anchor)
            {
                problems.push(format!(
                    "link `{target}`: {} has no heading with anchor #{anchor}",
                    file.display()
                ));
            }
        }
        problems
    }

    fn check_keys(&self, line: &Line<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let mut check_named = |name: &str, what: &str| {
            if self.config.top_level(name) && !self.config.has_dotted(name) {
                problems.push(format!("{what} `{name}` is not in the host's config"));
            }
        };
        let heading_table = heading_table(&line.heading);
        match &line.kind {
            Kind::Fence => {}
            Kind::Code(info) => {
                if info == "toml"
                    && let Some(table) = table_name(line.text.trim())
                {
                    check_named(table, "table");
                }
            }
            Kind::Prose => {
                for span in &line.spans {
                    let span = span.trim();
                    if let Some(table) = table_name(span) {
                        check_named(table, "table");
                    }
                    let head = span
                        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                        .next()
                        .unwrap_or_default();
                    let file = [".rs", ".md", ".toml", ".json", ".py", ".txt"]
                        .iter()
                        .any(|e| head.ends_with(e));
                    if head.contains('.') && !file {
                        check_named(head, "key");
                    }
                }
            }
        }
        // `key = value`: in code spans, and on the lines of a toml block.
        let assignments: Vec<(&str, Option<String>)> = match &line.kind {
            Kind::Code(info) if info == "toml" => line
                .text
                .split_once(" = ")
                .map(|(k, _)| (k.trim(), line.toml_table.clone()))
                .into_iter()
                .collect(),
            Kind::Prose => line
                .spans
                .iter()
                .filter_map(|s| s.split_once(" = "))
                .map(|(k, _)| (k, heading_table.clone()))
                .collect(),
            _ => Vec::new(),
        };
        let other_project = names_another_project(line.text);
        for (key, table) in assignments {
            if !is_identifier(key) || other_project {
                continue;
            }
            let known = match &table {
                Some(t) if self.config.is_table(t) => self.config.has_key(t, key),
                // A toml block under a table that is not the host's (say, Cargo.toml's).
                Some(t) if !self.config.top_level(t) && matches!(line.kind, Kind::Code(_)) => true,
                _ => self.config.has_key_anywhere(key),
            };
            if !known {
                let place = table.map(|t| format!(" [{t}]")).unwrap_or_default();
                problems.push(format!("key `{key}` is not in the host's config{place}"));
            }
        }
        // The first cell of a key table under a heading that names a table.
        if let (Kind::Prose, Some(table)) = (&line.kind, &heading_table)
            && let Some(cell) = line.text.trim().strip_prefix('|')
            && self.config.is_table(table)
        {
            let cell = cell.split('|').next().unwrap_or_default();
            for key in cell.split('`').skip(1).step_by(2) {
                if is_identifier(key) && !self.config.has_key(table, key) {
                    problems.push(format!("key `{key}` is not in the host's config [{table}]"));
                }
            }
        }
        problems
    }

    pub fn check_host_command(&self, command: &str) -> Vec<String> {
        let words: Vec<&str> = command
            .split_whitespace()
            .map(|w| w.trim_matches(|c| matches!(c, '\'' | '"' | '(' | ')' | ',')))
            .collect();
        // `host …` at the start, or `cargo run … --example host -- …`.
        let rest = if words
            .first()
            .is_some_and(|w| *w == "host" || w.ends_with("/host"))
        {
            &words[1..]
        } else if let Some(i) = words
            .windows(3)
            .position(|w| matches!(w[0], "--example" | "--bin") && w[1] == "host" && w[2] == "--")
        {
            &words[i + 3..]
        } else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        let mut rest = rest;
        let mut cmd = &self.host;
        let mut name = String::from("host");
        while let Some((w, after)) = rest.split_first() {
            rest = after;
            let option = if let Some(long) = w.strip_prefix("--") {
                let long = long.split('=').next().unwrap_or_default();
                if long.is_empty() || !long.chars().all(|c| c.is_ascii_lowercase() || c == '-') {
                    break;
                }
                Some((
                    cmd.get_arguments().find(|a| a.get_long() == Some(long)),
                    w.contains('='),
                ))
            } else if let Some(short) = w.strip_prefix('-') {
                let mut chars = short.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii_alphabetic() => Some((
                        cmd.get_arguments().find(|a| a.get_short() == Some(c)),
                        false,
                    )),
                    _ => break,
                }
            } else {
                None
            };
            match option {
                Some((None, _)) => {
                    problems.push(format!("`{name}` has no option `{w}`"));
                    break;
                }
                Some((Some(arg), inline_value)) => {
                    if arg.get_action().takes_values() && !inline_value {
                        rest = rest.get(1..).unwrap_or_default();
                    }
                }
                None => {
                    let is_word = w.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                        && w.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
                    if !is_word || !cmd.has_subcommands() {
                        break;
                    }
                    match cmd.find_subcommand(w) {
                        Some(sub) => {
                            cmd = sub;
                            name = format!("{name} {w}");
                        }
                        None => {
                            problems.push(format!("`{name}` has no subcommand `{w}`"));
                            break;
                        }
                    }
                }
            }
        }
        problems
    }
}

/// One of [`OTHER_PROJECTS`] is written in `text`, as a word of its own.
fn names_another_project(text: &str) -> bool {
    let boundary = |c: Option<char>| c.is_none_or(|c| !c.is_alphanumeric() && c != '-');
    OTHER_PROJECTS.iter().any(|p| {
        text.match_indices(p).any(|(i, _)| {
            boundary(text[..i].chars().next_back()) && boundary(text[i + p.len()..].chars().next())
        })
    })
}

fn is_identifier(s: &str) -> bool {
    s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// The words of a line that may be paths (see the module docs).
fn path_words(line: &str) -> Vec<String> {
    line.split(|c: char| {
        c.is_whitespace()
            || matches!(
                c,
                '`' | '(' | ')' | '[' | ']' | ',' | ';' | '"' | '\'' | '|' | '=' | '*'
            )
    })
    .filter_map(|w| {
        let w = w.split("::").next().unwrap_or_default();
        let w = w.split('#').next().unwrap_or_default();
        let w = w.trim_end_matches(['.', ':', '!', '?']);
        let placeholder = w.contains(['<', '>', '…', '$', '{', '}', '~', '@', '%', ':']);
        (!w.is_empty() && !placeholder).then(|| w.to_owned())
    })
    .collect()
}

/// The names in a folder.
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `path` without `.` and `..`, or `None` when it climbs out of the repository.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}
