//! The documents read into lines of prose and code: fenced blocks, code spans (which may run
//! on to the next line of their paragraph), the heading in force, GitHub's heading anchors.

use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Prose,
    /// A line of a fenced block, with the block's info string (`toml`, `sh`, ``).
    Code(String),
    /// A fence line.
    Fence,
}

#[derive(Debug)]
pub struct Line<'a> {
    pub number: usize,
    pub text: &'a str,
    pub kind: Kind,
    /// Code spans that start on this line (a span may run on to the next line of its
    /// paragraph; its line break is a space here).
    pub spans: Vec<String>,
    /// The text of the nearest heading at or above this line.
    pub heading: String,
    /// In a toml block: the block's last `[table]` line at or above this line.
    pub toml_table: Option<String>,
}

pub fn read_lines(text: &str) -> Vec<Line<'_>> {
    let mut lines = Vec::new();
    let mut fence: Option<String> = None;
    let mut heading = String::new();
    let mut toml_table: Option<String> = None;
    // An open code span carried over from the previous line of the paragraph.
    let mut open: Option<(usize, String)> = None;
    for (i, text) in text.lines().enumerate() {
        let trimmed = text.trim_start();
        if let Some(info) = trimmed.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(info.trim().to_owned()),
            };
            open = None;
            toml_table = None;
            lines.push(Line {
                number: i + 1,
                text,
                kind: Kind::Fence,
                spans: Vec::new(),
                heading: heading.clone(),
                toml_table: None,
            });
            continue;
        }
        if let Some(info) = &fence {
            if info == "toml"
                && let Some(t) = table_name(text.trim())
            {
                toml_table = Some(t.to_owned());
            }
            lines.push(Line {
                number: i + 1,
                text,
                kind: Kind::Code(info.clone()),
                spans: Vec::new(),
                heading: heading.clone(),
                toml_table: toml_table.clone(),
            });
            continue;
        }
        if trimmed.is_empty() || trimmed.starts_with('#') {
            open = None;
        }
        if trimmed.starts_with('#') {
            heading = trimmed.trim_start_matches('#').trim().to_owned();
        }
        lines.push(Line {
            number: i + 1,
            text,
            kind: Kind::Prose,
            spans: Vec::new(),
            heading: heading.clone(),
            toml_table: None,
        });
        let index = lines.len() - 1;
        if let Some((_, span)) = &mut open {
            span.push(' ');
        }
        for c in text.chars() {
            if c == '`' {
                match open.take() {
                    Some((at, span)) => lines[at].spans.push(span),
                    None => open = Some((index, String::new())),
                }
            } else if let Some((_, span)) = &mut open {
                span.push(c);
            }
        }
    }
    lines
}

/// The code spans of a heading (`` ## `[server]` (example host) `` names `[server]`).
pub fn heading_table(heading: &str) -> Option<String> {
    heading
        .split('`')
        .skip(1)
        .step_by(2)
        .find_map(|s| table_name(s).map(str::to_owned))
}

/// `[table]` -> `table`.
pub fn table_name(s: &str) -> Option<&str> {
    s.strip_prefix('[')?.strip_suffix(']')
}

/// GitHub's anchors of a Markdown file's headings.
pub fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in read_lines(text) {
        if line.kind != Kind::Prose || !line.text.starts_with('#') {
            continue;
        }
        let slug: String = line
            .text
            .trim_start_matches('#')
            .trim()
            .to_lowercase()
            .chars()
            .filter_map(|c| match c {
                ' ' => Some('-'),
                c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                _ => None,
            })
            .collect();
        let n = seen.entry(slug.clone()).or_default();
        out.insert(if *n == 0 {
            slug.clone()
        } else {
            format!("{slug}-{n}")
        });
        *n += 1;
    }
    out
}
