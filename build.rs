//! Build-time generation from the declarative specs.
//!
//! - `schema/*.json` (draft-04 subset) are bundled: a `$ref` to `other.json#/definitions/X`
//!   is copied into the file's own `definitions`, so every bundled document stands alone.
//!   The bundled files go to `OUT_DIR/schema/` for the runtime validator.
//! - typify turns every titled root and every definition into Rust types in `OUT_DIR/models.rs`.
//! - The API Gateway request model (refs inlined, draft-04) and an OpenAPI 3 document of the
//!   API are written to `OUT_DIR/generated/`; a test compares them with `infra/generated/`.
//! - Every `prompts/*.tera` is parsed, so a template syntax error fails the build.
//! - The gpt-4o tokenizer's vocabulary (o200k_base, from tiktoken-rs) becomes static tables
//!   (`src/tokens/table.rs` describes them), so counting tokens needs no start-up work.
//!
//! Build scripts may panic: a panic here is a failed build with the message shown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

#[path = "src/tokens/table.rs"]
mod token_table;

const DRAFT4: &str = "http://json-schema.org/draft-04/schema#";

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed=schema");
    println!("cargo:rerun-if-changed=prompts");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/tokens/table.rs");

    tokenizer_tables(&out);

    let raw = read_schemas(&root.join("schema"));
    let bundled: BTreeMap<String, Value> = raw
        .keys()
        .map(|name| (name.clone(), bundle(name, &raw)))
        .collect();

    fs::create_dir_all(out.join("schema")).unwrap();
    for (name, doc) in &bundled {
        check_draft4_subset(name, doc);
        fs::write(out.join("schema").join(name), pretty(doc)).unwrap();
    }

    fs::write(out.join("models.rs"), generate_models(&bundled)).unwrap();

    fs::create_dir_all(out.join("generated")).unwrap();
    let request = &bundled["chat-request.json"];
    let mut model = inline_refs(request, request);
    if let Value::Object(m) = &mut model {
        m.remove("definitions");
        m.insert("$schema".into(), json!(DRAFT4));
    }
    fs::write(
        out.join("generated").join("apigw-chat-request-model.json"),
        pretty(&model),
    )
    .unwrap();
    fs::write(
        out.join("generated").join("openapi.json"),
        pretty(&openapi(&bundled)),
    )
    .unwrap();

    let templates = check_templates(&root.join("prompts"));
    let list: String = templates
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            format!("    ({name:?}, include_str!({:?})),\n", p.display().to_string())
        })
        .collect();
    fs::write(
        out.join("prompts.rs"),
        format!("/// prompts/*.tera, embedded at build time.\npub const EMBEDDED: &[(&str, &str)] = &[\n{list}];\n"),
    )
    .unwrap();
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap();
    s.push('\n');
    s
}

fn read_schemas(dir: &Path) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = fs::read_to_string(&path).unwrap();
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("schema/{name} is not valid JSON: {e}"));
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
    rewrite_refs(&mut doc, &mut pending);
    let mut defs: Map<String, Value> = doc
        .get("definitions")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    while let Some((file, def)) = pending.pop() {
        if defs.contains_key(&def) {
            continue;
        }
        let source = all
            .get(&file)
            .unwrap_or_else(|| panic!("schema/{name}: $ref to unknown file {file}"));
        let mut copied = source
            .pointer(&format!("/definitions/{def}"))
            .unwrap_or_else(|| panic!("schema/{name}: {file} has no definition {def}"))
            .clone();
        // Refs inside the copied definition are local to its own file.
        qualify_local_refs(&mut copied, &file);
        rewrite_refs(&mut copied, &mut pending);
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

fn rewrite_refs(v: &mut Value, pending: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get_mut("$ref") {
                if let Some((file, frag)) = r.split_once('#') {
                    if !file.is_empty() {
                        let def = frag
                            .strip_prefix("/definitions/")
                            .unwrap_or_else(|| panic!("unsupported $ref {r}"))
                            .to_string();
                        pending.push((file.to_string(), def.clone()));
                        *r = format!("#/definitions/{def}");
                    }
                }
            }
            m.values_mut().for_each(|c| rewrite_refs(c, pending));
        }
        Value::Array(a) => a.iter_mut().for_each(|c| rewrite_refs(c, pending)),
        _ => {}
    }
}

/// Keywords outside draft-04, or that typify or API Gateway reject, fail the build early.
fn check_draft4_subset(name: &str, v: &Value) {
    const FORBIDDEN: [&str; 9] = [
        "$id", "const", "contains", "propertyNames", "if", "then", "else", "examples", "$defs",
    ];
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
                    (true, Value::Object(children)) => {
                        children.values().for_each(|p| check_draft4_subset(name, p))
                    }
                    _ => check_draft4_subset(name, c),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| check_draft4_subset(name, c)),
        _ => {}
    }
}

fn generate_models(bundled: &BTreeMap<String, Value>) -> String {
    // One map of every named schema: each file's titled root (when it describes a value) and
    // every definition. Identical definitions bundled into several files appear once.
    let mut named: BTreeMap<String, Value> = BTreeMap::new();
    for (file, doc) in bundled {
        if let Some(Value::Object(defs)) = doc.get("definitions") {
            for (k, d) in defs {
                if let Some(prev) = named.get(k) {
                    assert_eq!(prev, d, "definition {k} differs between files ({file})");
                }
                named.insert(k.clone(), d.clone());
            }
        }
        if doc.get("type").is_some() {
            let mut root = doc.clone();
            if let Value::Object(m) = &mut root {
                m.remove("definitions");
                m.remove("$schema");
            }
            let title = doc["title"].as_str().unwrap().to_string();
            named.insert(title, root);
        }
    }
    let schemas: Vec<(String, schemars08::schema::Schema)> = named
        .into_iter()
        .map(|(k, v)| {
            let s = serde_json::from_value(v)
                .unwrap_or_else(|e| panic!("schema {k} does not parse as a schema: {e}"));
            (k, s)
        })
        .collect();
    let mut settings = typify::TypeSpaceSettings::default();
    settings.with_struct_builder(false);
    settings.with_derive("PartialEq".to_string());
    // Template variables are described to prompt authors with schemars (`coach-api prompt schema`).
    settings.with_derive("::schemars::JsonSchema".to_string());
    // Ordered maps: rendered prompts and stored items are deterministic.
    settings.with_map_type("::std::collections::BTreeMap");
    let mut space = typify::TypeSpace::new(&settings);
    space
        .add_ref_types(schemas)
        .unwrap_or_else(|e| panic!("typify: {e}"));
    let file: syn::File = syn::parse2(space.to_stream()).unwrap();
    format!(
        "// Generated by build.rs from schema/*.json. Do not edit.\n{}",
        prettyplease::unparse(&file)
    )
}

/// Replaces every local `$ref` with the definition it names (the schemas are not recursive).
fn inline_refs(v: &Value, doc: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                let pointer = r.trim_start_matches('#');
                let target = doc
                    .pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling $ref {r}"));
                return inline_refs(target, doc);
            }
            Value::Object(
                m.iter()
                    .filter(|(k, _)| k.as_str() != "definitions")
                    .map(|(k, c)| (k.clone(), inline_refs(c, doc)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(|c| inline_refs(c, doc)).collect()),
        other => other.clone(),
    }
}

/// An OpenAPI 3.0 schema object: refs inlined, no `$schema`.
fn openapi_schema(doc: &Value) -> Value {
    let mut s = inline_refs(doc, doc);
    if let Value::Object(m) = &mut s {
        m.remove("$schema");
    }
    s
}

fn openapi(bundled: &BTreeMap<String, Value>) -> Value {
    let schema = |f: &str| openapi_schema(&bundled[f]);
    let error_response = |desc: &str| {
        json!({
            "description": desc,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
        })
    };
    let rate_headers = json!({
        "RateLimit-Limit": { "schema": { "type": "integer" }, "description": "Requests allowed this hour" },
        "RateLimit-Remaining": { "schema": { "type": "integer" }, "description": "Requests left this hour" },
        "RateLimit-Reset": { "schema": { "type": "integer" }, "description": "Seconds until the hour window resets" }
    });
    let mut responses = Map::new();
    responses.insert(
        "200".into(),
        json!({
            "description": "The coach's reply (possibly degraded)",
            "headers": rate_headers,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CoachingChatResponse" } } }
        }),
    );
    for (code, desc) in [
        ("400", "The request does not match the schema"),
        ("401", "No caller identity"),
        ("403", "The request names another golfer"),
        ("404", "No such route"),
        ("405", "Method not allowed"),
        ("409", "The same clientMessageId is being answered"),
        ("413", "Body over 10 KB"),
        ("415", "Body is not JSON"),
        ("429", "A rate or spend limit was reached"),
        ("503", "At capacity or storage unavailable"),
    ] {
        let mut r = error_response(desc);
        if code == "429" || code == "503" {
            r["headers"] = json!({ "Retry-After": { "schema": { "type": "integer" } } });
        }
        responses.insert(code.into(), r);
    }
    let read = |def: &str| {
        let doc = &bundled["reads.json"];
        let mut v = inline_refs(&doc["definitions"][def], doc);
        if let Value::Object(m) = &mut v {
            m.remove("title");
        }
        v
    };
    let json_response = |desc: &str, schema: &str| {
        json!({
            "description": desc,
            "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } }
        })
    };
    let read_errors = |ok: Value, extra: &[(&str, &str)]| {
        let mut r = Map::new();
        r.insert("200".into(), ok);
        for (code, desc) in [("400", "Invalid query"), ("401", "No caller identity"), ("405", "Method not allowed"), ("503", "Storage unavailable")]
            .iter()
            .chain(extra.iter())
        {
            r.insert((*code).into(), error_response(desc));
        }
        Value::Object(r)
    };
    json!({
        "openapi": "3.0.1",
        "info": {
            "title": "Golf coaching chat API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Generated by build.rs from schema/. Do not edit."
        },
        "paths": {
            "/api/chat/coaching": {
                "post": {
                    "operationId": "postCoachingMessage",
                    "x-amazon-apigateway-request-validator": "body-only",
                    "requestBody": {
                        "required": true,
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/CoachingChatRequest" } } }
                    },
                    "responses": Value::Object(responses)
                }
            },
            "/api/chat/coaching/conversation": {
                "get": {
                    "operationId": "getConversation",
                    "description": "Today's conversation (or the given day's), for ChatScreen to restore on open.",
                    "parameters": [{
                        "name": "date", "in": "query", "required": false,
                        "description": "YYYY-MM-DD (UTC); today when absent",
                        "schema": { "type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$" }
                    }],
                    "responses": read_errors(json_response("The conversation", "ConversationView"), &[("404", "No conversation that day")])
                }
            },
            "/api/chat/coaching/themes": {
                "get": {
                    "operationId": "getThemes",
                    "description": "Current coaching themes and progress, for ResultsScreen.",
                    "responses": read_errors(json_response("The themes", "ThemesView"), &[])
                }
            },
            "/api/chat/coaching/usage": {
                "get": {
                    "operationId": "getUsage",
                    "description": "Requests left this hour, spend left today, reset times.",
                    "responses": read_errors(json_response("The quota", "UsageView"), &[])
                }
            },
            "/api/chat/coaching/me": {
                "delete": {
                    "operationId": "deleteMyData",
                    "description": "Deletes the caller's conversations, profile and stored answers; counters expire on their own.",
                    "responses": read_errors(json_response("What was removed", "DeletionReport"), &[])
                }
            }
        },
        "components": {
            "schemas": {
                "CoachingChatRequest": schema("chat-request.json"),
                "CoachingChatResponse": schema("chat-response.json"),
                "ErrorBody": schema("error.json"),
                "ConversationView": read("ConversationView"),
                "ThemesView": read("ThemesView"),
                "UsageView": read("UsageView"),
                "DeletionReport": read("DeletionReport")
            }
        },
        "x-amazon-apigateway-request-validators": {
            "body-only": { "validateRequestBody": true, "validateRequestParameters": false }
        }
    })
}

fn check_templates(dir: &Path) -> Vec<PathBuf> {
    let mut tera = tera::Tera::default();
    let files: Vec<(PathBuf, Option<String>)> = tera_paths(dir).into_iter().map(|p| (p, None)).collect();
    if files.is_empty() {
        panic!("prompts/ holds no .tera templates");
    }
    if let Err(e) = tera.add_template_files(files) {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!("\n  {s}"));
            src = s.source();
        }
        panic!("a prompt template does not parse: {msg}");
    }
    let mut paths: Vec<PathBuf> = tera_paths(dir);
    paths.sort();
    paths
}

fn tera_paths(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("tera"))
        .collect()
}

/// Writes the o200k_base tables of `src/tokens/table.rs` and `o200k.rs` (sizes and the
/// pre-tokenizing pattern), once per layout version: build.rs reruns on every schema or
/// template change, and building tiktoken-rs's tables takes a few seconds in a build script.
fn tokenizer_tables(out: &Path) {
    use token_table::{slot, LAYOUT_VERSION, SLOTS};
    let stamp = out.join("o200k.stamp");
    if fs::read_to_string(&stamp).ok().as_deref() == Some(&LAYOUT_VERSION.to_string()) {
        return;
    }
    let bpe = tiktoken_rs::o200k_base().expect("tiktoken-rs builds o200k_base");
    // Ordinary tokens have the ranks 0..N; the first rank that does not decode ends them
    // (special tokens sit above a gap and are never produced by ordinary encoding).
    let tokens: Vec<Vec<u8>> = (0u32..).map_while(|rank| bpe.decode_bytes(&[rank]).ok()).collect();
    assert!(tokens.len() > 199_000, "o200k_base has about 200k tokens, got {}", tokens.len());

    let mut bytes = Vec::with_capacity(tokens.iter().map(Vec::len).sum());
    let mut offsets = Vec::with_capacity((tokens.len() + 1) * 4);
    let mut slots = vec![0u32; SLOTS];
    for (rank, token) in tokens.iter().enumerate() {
        offsets.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        bytes.extend_from_slice(token);
        let mut i = slot(token);
        while slots[i] != 0 {
            let other = &tokens[slots[i] as usize - 1];
            assert!(other != token, "o200k_base has a duplicate token at rank {rank}");
            i = (i + 1) % SLOTS;
        }
        slots[i] = rank as u32 + 1;
    }
    offsets.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    let slots: Vec<u8> = slots.iter().flat_map(|s| s.to_le_bytes()).collect();

    fs::write(out.join("o200k_bytes.bin"), bytes).unwrap();
    fs::write(out.join("o200k_offsets.bin"), offsets).unwrap();
    fs::write(out.join("o200k_slots.bin"), slots).unwrap();
    fs::write(
        out.join("o200k.rs"),
        format!(
            "/// Ordinary tokens in o200k_base.\npub const TOKENS: usize = {};\n\
             /// The pattern that splits text into pieces before byte-pair merging (from tiktoken-rs).\n\
             pub const PATTERN: &str = {:?};\n",
            tokens.len(),
            tiktoken_rs::O200K_BASE_PAT_STR
        ),
    )
    .unwrap();
    fs::write(stamp, LAYOUT_VERSION.to_string()).unwrap();
}
