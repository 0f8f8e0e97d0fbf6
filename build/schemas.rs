//! `schema/*.json` (draft-04 subset) read, checked and bundled: a `$ref` to
//! `other.json#/definitions/X` is copied into the file's own `definitions`, and one to a whole
//! file (`other.json#`) under that file's title, so every bundled document stands alone (for
//! the runtime validator, typify and the generated documents).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

pub const DRAFT4: &str = "http://json-schema.org/draft-04/schema#";

pub fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    s
}

/// Every schema file, bundled and checked, by file name.
pub fn load(dir: &Path) -> BTreeMap<String, Value> {
    let raw = read(dir);
    raw.keys()
        .map(|name| {
            let doc = bundle(name, &raw);
            check_draft4_subset(name, &doc);
            (name.clone(), doc)
        })
        .collect()
}

fn read(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("schema/{name} is not valid JSON: {e}"));
        if value.get("$schema").and_then(Value::as_str) != Some(DRAFT4) {
            panic!("schema/{name} must declare \"$schema\": \"{DRAFT4}\" (API Gateway models are draft-04)");
        }
        if value.get("title").is_none() {
            panic!("schema/{name} needs a title: typify names the root type after it");
        }
        out.insert(name, value);
    }
    out
}

/// Copies cross-file definitions into the document and points the refs at the local copy.
fn bundle(name: &str, all: &BTreeMap<String, Value>) -> Value {
    let mut doc = all[name].clone();
    let mut pending = vec![];
    // Rewrite first, so the file's own definitions point at local copies too.
    rewrite_refs(&mut doc, &mut pending, all);
    let mut defs: Map<String, Value> = doc.get("definitions").and_then(Value::as_object).cloned().unwrap_or_default();
    while let Some((file, def)) = pending.pop() {
        if defs.contains_key(&def) {
            continue;
        }
        let source = all.get(&file).unwrap_or_else(|| panic!("schema/{name}: $ref to unknown file {file}"));
        let mut copied = match source.pointer(&format!("/definitions/{def}")) {
            Some(d) => d.clone(),
            // A whole file, under its title; its own definitions are pulled in by their refs.
            None if source.get("title").and_then(Value::as_str) == Some(def.as_str()) => {
                let mut root = source.clone();
                if let Value::Object(m) = &mut root {
                    m.remove("$schema");
                    m.remove("definitions");
                }
                root
            }
            None => panic!("schema/{name}: {file} has no definition {def}"),
        };
        // Refs inside the copied definition are local to its own file.
        qualify_local_refs(&mut copied, &file);
        rewrite_refs(&mut copied, &mut pending, all);
        defs.insert(def, copied);
    }
    if let Value::Object(m) = &mut doc {
        if !defs.is_empty() {
            m.insert("definitions".into(), Value::Object(defs));
        }
    }
    doc
}

fn qualify_local_refs(v: &mut Value, file: &str) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if r.starts_with("#/") {
                    *r = format!("{file}{r}");
                }
            }
            m.values_mut().for_each(|c| qualify_local_refs(c, file));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| qualify_local_refs(c, file)),
        _ => {}
    }
}

fn rewrite_refs(v: &mut Value, pending: &mut Vec<(String, String)>, all: &BTreeMap<String, Value>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some((file, frag)) = r.split_once('#') {
                    if !file.is_empty() {
                        let def = match frag {
                            "" | "/" => all
                                .get(file)
                                .and_then(|d| d.get("title"))
                                .and_then(Value::as_str)
                                .unwrap_or_else(|| panic!("$ref {r}: no such file, or it has no title"))
                                .to_string(),
                            _ => frag.strip_prefix("/definitions/").unwrap_or_else(|| panic!("unsupported $ref {r}")).to_string(),
                        };
                        pending.push((file.to_string(), def.clone()));
                        *r = format!("#/definitions/{def}");
                    }
                }
            }
            m.values_mut().for_each(|c| rewrite_refs(c, pending, all));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, pending, all)),
        _ => {}
    }
}

/// Keywords outside draft-04, or that typify or API Gateway reject, fail the build early.
fn check_draft4_subset(name: &str, v: &Value) {
    const FORBIDDEN: [&str; 9] = ["$id", "const", "contains", "propertyNames", "if", "then", "else", "examples", "$defs"];
    match v {
        Value::Object(m) => {
            if let Some(k) = FORBIDDEN.iter().find(|k| m.contains_key(**k)) {
                panic!("schema/{name}: keyword {k} is not in the draft-04 subset");
            }
            // typify's generated code compiles patterns with regress and unwraps: prove they compile.
            if let Some(Value::String(p)) = m.get("pattern") {
                if let Err(e) = regress::Regex::new(p) {
                    panic!("schema/{name}: pattern {p} does not compile: {e}");
                }
            }
            match m.get("exclusiveMinimum").or(m.get("exclusiveMaximum")) {
                Some(Value::Number(_)) => panic!("schema/{name}: numeric exclusive bounds are draft-06"),
                Some(_) => panic!("schema/{name}: typify cannot read boolean exclusive bounds; use minimum/maximum"),
                None => {}
            }
            for (k, c) in m {
                // The keys of these maps are names, not keywords.
                let named = matches!(k.as_str(), "properties" | "definitions" | "patternProperties");
                match (named, c) {
                    (true, Value::Object(children)) => children.values().for_each(|p| check_draft4_subset(name, p)),
                    _ => check_draft4_subset(name, c),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| check_draft4_subset(name, c)),
        _ => {}
    }
}

/// Replaces every local `$ref` with the definition it names (the schemas are not recursive).
pub fn inline_refs(v: &Value, doc: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let target = doc.pointer(r.trim_start_matches('#')).unwrap_or_else(|| panic!("dangling $ref {r}"));
                return inline_refs(target, doc);
            }
            Value::Object(m.iter().filter(|(k, _)| k.as_str() != "definitions").map(|(k, c)| (k.clone(), inline_refs(c, doc))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(|c| inline_refs(c, doc)).collect()),
        other => other.clone(),
    }
}
