//! The invariants ARCHITECTURE.md states, checked on the source: who may import what, who
//! reads the environment, who speaks DynamoDB, no import circles, and the flow's size limits.
//! Test modules (`#[cfg(test)] mod … { }`) are left out: they may reach anywhere.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test crate: a panic is how a test fails")]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A source file of `src/` without its test modules: its module path and its lines.
struct Source {
    module: String,
    path: PathBuf,
    lines: Vec<String>,
}

fn sources() -> Vec<Source> {
    let mut files = vec![];
    collect(Path::new("src"), &mut files);
    files
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix("src").unwrap().with_extension("");
            let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
            if matches!(parts.last().map(String::as_str), Some("mod" | "lib" | "main")) {
                parts.pop();
            }
            let text = std::fs::read_to_string(&path).unwrap();
            Source { module: parts.join("::"), path, lines: without_tests(&text) }
        })
        .collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The lines outside `#[cfg(test)] mod name { … }` blocks.
fn without_tests(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut kept = vec![];
    let mut i = 0;
    while i < lines.len() {
        let opens_test_module = lines[i].trim() == "#[cfg(test)]" && lines.get(i + 1).is_some_and(|l| l.trim_start().starts_with("mod ") || l.trim_start().starts_with("pub(crate) mod "));
        if opens_test_module {
            let mut depth = 0i32;
            let mut j = i + 1;
            loop {
                depth += braces(lines[j]);
                j += 1;
                if depth <= 0 || j >= lines.len() {
                    break;
                }
            }
            i = j;
            continue;
        }
        kept.push(lines[i].to_string());
        i += 1;
    }
    kept
}

/// Opening minus closing braces on a line, outside string and char literals and comments.
fn braces(line: &str) -> i32 {
    let code = line.split("//").next().unwrap_or("");
    let mut depth = 0;
    let mut in_str = false;
    let mut prev = ' ';
    for c in code.chars() {
        match c {
            '"' if prev != '\\' => in_str = !in_str,
            '{' if !in_str => depth += 1,
            '}' if !in_str => depth -= 1,
            _ => {}
        }
        prev = c;
    }
    depth
}

fn code(line: &str) -> &str {
    line.split("//").next().unwrap_or("")
}

/// The modules each module refers to through `crate::` or `super::` paths (its children,
/// named without a prefix, are its own and do not count).
fn imports(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let modules: BTreeSet<&str> = sources.iter().map(|s| s.module.as_str()).collect();
    let path = regex::Regex::new(r"\b(crate|super)((?:::[a-z_0-9]+)+)").unwrap();
    let mut edges = BTreeMap::new();
    for s in sources {
        let parent = s.module.rsplit_once("::").map_or("", |(p, _)| p);
        let mut to = BTreeSet::new();
        for line in &s.lines {
            for m in path.captures_iter(code(line)) {
                let rest = m[2].trim_start_matches("::");
                let full = match (&m[1], parent) {
                    ("crate", _) | ("super", "") => rest.to_string(),
                    _ => format!("{parent}::{rest}"),
                };
                let segments: Vec<&str> = full.split("::").collect();
                let target = (1..=segments.len()).rev().map(|k| segments[..k].join("::")).find(|c| modules.contains(c.as_str()));
                if let Some(t) = target.filter(|t| *t != s.module && !t.is_empty()) {
                    to.insert(t);
                }
            }
        }
        edges.insert(s.module.clone(), to);
    }
    edges
}

#[test]
fn the_http_edge_never_imports_the_store() {
    for s in sources().iter().filter(|s| s.module.starts_with("api")) {
        for line in &s.lines {
            assert!(!code(line).contains("crate::store"), "{}: {line}", s.path.display());
        }
    }
}

#[test]
fn limits_is_pure_policy() {
    let edges = imports(&sources());
    let limits = &edges["limits"];
    for forbidden in ["store", "llm", "api", "chat", "state"] {
        assert!(!limits.iter().any(|m| m == forbidden || m.starts_with(&format!("{forbidden}::"))), "limits imports {forbidden}: {limits:?}");
    }
}

#[test]
fn only_the_store_speaks_dynamodb_and_only_config_reads_the_environment() {
    for s in sources() {
        for line in &s.lines {
            let c = code(line);
            if !s.module.starts_with("store") {
                assert!(!c.contains("aws_sdk_dynamodb"), "{}: {line}", s.path.display());
            }
            if s.module != "config" {
                assert!(!c.contains("env::var"), "{}: {line}", s.path.display());
            }
            // Every DynamoDB call of the store counts, waits and maps errors in one place.
            if s.module.starts_with("store") && s.module != "store" && s.module != "store::deadline" {
                assert!(!c.contains("within(") && !c.contains("stats::call"), "{}: {line}", s.path.display());
            }
        }
    }
}

#[test]
fn no_import_circles() {
    let edges = imports(&sources());
    // Depth-first search for a path back to where it started.
    fn reaches(edges: &BTreeMap<String, BTreeSet<String>>, from: &str, to: &str, seen: &mut BTreeSet<String>, path: &mut Vec<String>) -> bool {
        for next in edges.get(from).into_iter().flatten() {
            // A child naming its parent's items through `super::` is one module's inside.
            if from.starts_with(&format!("{next}::")) || next.starts_with(&format!("{from}::")) {
                continue;
            }
            path.push(next.clone());
            if next == to || (seen.insert(next.clone()) && reaches(edges, next, to, seen, path)) {
                return true;
            }
            path.pop();
        }
        false
    }
    for module in edges.keys() {
        let mut path = vec![module.clone()];
        let circle = reaches(&edges, module, module, &mut BTreeSet::new(), &mut path);
        assert!(!circle, "import circle: {}", path.join(" → "));
    }
}

/// The number of parameters of each `fn` in `text` (`self` included), by name.
fn arities(text: &str) -> Vec<(String, usize)> {
    let start = regex::Regex::new(r"\bfn\s+(\w+)").unwrap();
    let mut out = vec![];
    for m in start.captures_iter(text) {
        let mut rest = text[m.get(0).unwrap().end()..].trim_start();
        // Generic parameters first: `<` … the matching `>` (not an `->`).
        if rest.starts_with('<') {
            let mut angle = 0;
            let mut prev = ' ';
            for (i, c) in rest.char_indices() {
                match c {
                    '<' => angle += 1,
                    '>' if prev != '-' => angle -= 1,
                    _ => {}
                }
                prev = c;
                if angle == 0 {
                    rest = &rest[i + 1..];
                    break;
                }
            }
        }
        let (mut depth, mut params, mut any, mut angle, mut prev) = (0i32, 0usize, false, 0i32, ' ');
        for c in rest.chars() {
            match c {
                '(' | '[' => depth += 1,
                ')' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                '<' => angle += 1,
                '>' if prev != '-' && angle > 0 => angle -= 1,
                ',' if depth == 1 && angle == 0 => {
                    params += 1;
                    any = false;
                }
                c if depth >= 1 && !c.is_whitespace() => any = true,
                _ => {}
            }
            prev = c;
        }
        out.push((m[1].to_string(), params + usize::from(any)));
    }
    out
}

#[test]
fn no_function_takes_more_than_five_arguments() {
    assert_eq!(arities("fn a(x: u8, y: Vec<(u8, u8)>,) {} fn b<T: Fn(u8, u8)>(&self, f: T) {}"), [("a".to_string(), 2), ("b".to_string(), 2)]);
    for s in sources() {
        for (name, n) in arities(&s.lines.join("\n")) {
            assert!(n <= 5, "{}: fn {name} takes {n} arguments", s.path.display());
        }
    }
}

#[test]
fn the_flow_reads_in_small_pieces() {
    let fn_start = regex::Regex::new(r"^\s*(pub(\([a-z]+\))?\s+)?(const\s+)?(async\s+)?fn\s+(\w+)").unwrap();
    for s in sources() {
        if s.module.starts_with("chat") {
            let total = std::fs::read_to_string(&s.path).unwrap().lines().count();
            assert!(total <= 300, "{} has {total} lines", s.path.display());
        }
        let mut i = 0;
        while i < s.lines.len() {
            let Some(m) = fn_start.captures(&s.lines[i]) else {
                i += 1;
                continue;
            };
            if s.lines[i].trim_end().ends_with(';') {
                i += 1;
                continue;
            }
            let (mut depth, mut started, mut j) = (0, false, i);
            while j < s.lines.len() {
                depth += braces(&s.lines[j]);
                started |= code(&s.lines[j]).contains('{');
                if started && depth <= 0 {
                    break;
                }
                j += 1;
            }
            let length = j - i + 1;
            assert!(length <= 60, "{}: fn {} has {length} lines", s.path.display(), &m[5]);
            i += 1;
        }
    }
}

/// A streamed answer reads the provider's events in the request's own task: the model client
/// neither spawns a reader nor takes async-openai's streaming call, which does.
#[test]
fn the_model_stream_is_read_in_the_requests_own_task() {
    let llm: Vec<Source> = sources().into_iter().filter(|s| s.module.starts_with("llm")).collect();
    assert!(llm.iter().any(|s| s.lines.iter().any(|l| code(l).contains(".eventsource()"))), "the SSE parser reads the byte stream");
    for s in &llm {
        for line in &s.lines {
            let c = code(line);
            assert!(!c.contains("tokio::spawn") && !c.contains("create_stream") && !c.contains("mpsc::"), "{}: {line}", s.path.display());
        }
    }
}
