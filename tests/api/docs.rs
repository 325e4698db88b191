//! The documentation holds up: every relative link in README.md,
//! SECURITY.md and docs/ leads to a file (and, into markdown, to a
//! heading), and docs/configuration.md names exactly the variables
//! `qrlogin --help` names. Docs that point nowhere, or a setting nobody
//! documented, fail the build instead of a reader.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md, SECURITY.md and every markdown page in docs/.
fn documents() -> Vec<PathBuf> {
    let mut files = vec![root().join("README.md"), root().join("SECURITY.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
}

/// The lines of `text` outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// `line` without its inline code spans (`` `a[0](b)` `` is no link).
fn without_code_spans(line: &str) -> String {
    line.split('`').step_by(2).collect::<Vec<_>>().join(" ")
}

/// GitHub's anchor for a heading: lowercase, punctuation dropped, spaces
/// to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of a markdown text's headings, with GitHub's `-1`, `-2` for
/// repeated ones.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = BTreeSet::new();
    for line in prose(text) {
        let hashes = line.chars().take_while(|c| *c == '#').count();
        if hashes == 0 || hashes > 6 || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(&line[hashes..]);
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

/// Every `](target)` of a markdown text outside code.
fn link_targets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in prose(text) {
        let line = without_code_spans(line);
        let mut rest = line.as_str();
        while let Some(at) = rest.find("](") {
            rest = &rest[at + 2..];
            let end = rest.find(')').unwrap_or(rest.len());
            let target = rest[..end].split_whitespace().next().unwrap_or("");
            out.push(target.to_owned());
            rest = &rest[end..];
        }
    }
    out
}

/// What is wrong with the relative links of `text`, a file in `dir` named
/// `name`: each as "name: target (why)".
fn broken_links(name: &str, dir: &Path, text: &str) -> Vec<String> {
    let mut broken = Vec::new();
    for target in link_targets(text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((p, a)) => (p, Some(a)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            None
        } else {
            let file = dir.join(path);
            if !file.exists() {
                broken.push(format!("{name}: {target} (no such file)"));
                continue;
            }
            Some(file)
        };
        let Some(anchor) = anchor else { continue };
        let heading_text = match &file {
            None => text.to_owned(),
            Some(f) if f.extension().is_some_and(|e| e == "md") => {
                std::fs::read_to_string(f).unwrap()
            }
            Some(_) => continue,
        };
        if !anchors(&heading_text).contains(anchor) {
            broken.push(format!("{name}: {target} (no such heading)"));
        }
    }
    broken
}

#[test]
fn every_relative_link_in_the_docs_resolves() {
    let mut broken = Vec::new();
    let mut links = 0;
    for file in documents() {
        let text = std::fs::read_to_string(&file).unwrap();
        links += link_targets(&text).len();
        let name = file.strip_prefix(root()).unwrap().display().to_string();
        broken.extend(broken_links(&name, file.parent().unwrap(), &text));
    }
    assert!(links > 30, "the scan found only {links} links");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_catches_a_missing_file_and_a_missing_heading() {
    let dir = root().join("docs");
    let text = "# Top\n\n## Sub part (`x`)\n\n[a](redis.md) [b](#sub-part-x) [c](../README.md#the-two-commands)\n\
                [d](nowhere.md) [e](#nope) [f](redis.md#not-a-heading) `[g](ignored.md)`\n\
                ```\n[h](in-code.md)\n```\n[i](https://example.com/x.md)\n";
    let broken = broken_links("t.md", &dir, text);
    assert_eq!(
        broken,
        [
            "t.md: nowhere.md (no such file)",
            "t.md: #nope (no such heading)",
            "t.md: redis.md#not-a-heading (no such heading)",
        ]
    );
}

fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("QRLOGIN_") {
        rest = &rest[at..];
        let end = rest
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        out.insert(rest[..end].trim_end_matches('_').to_owned());
        rest = &rest[end..];
    }
    out
}

#[test]
fn the_configuration_page_names_exactly_the_variables_of_help() {
    let out = super::cli::qrlogin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = variables(&String::from_utf8_lossy(&out.stdout));
    assert!(help.len() > 40, "--help names only {help:?}");
    let page = variables(&std::fs::read_to_string(root().join("docs/configuration.md")).unwrap());
    let undocumented: Vec<_> = help.difference(&page).collect();
    let unknown: Vec<_> = page.difference(&help).collect();
    assert!(
        undocumented.is_empty(),
        "in --help, missing from docs/configuration.md: {undocumented:?}"
    );
    assert!(
        unknown.is_empty(),
        "in docs/configuration.md, unknown to --help: {unknown:?}"
    );
}
