//! The build script's modules (`build/`), compiled here as well so their logic has tests of
//! its own: bundling, the draft-04 check, and the OpenAPI document from the route table.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, reason = "a test crate: a panic is how a test fails")]

#[path = "../build/openapi.rs"]
mod openapi;
#[path = "../src/api/routes.rs"]
#[allow(dead_code, reason = "only the table is read here")]
mod routes;
#[path = "../build/schemas.rs"]
#[allow(dead_code, reason = "the build writes files with `pretty`; the tests read values")]
mod schemas;

use serde_json::{json, Value};

fn folder(files: &[(&str, Value)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("codegen-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, doc) in files {
        std::fs::write(dir.join(name), doc.to_string()).unwrap();
    }
    dir
}

fn doc(title: &str, body: Value) -> Value {
    let mut v = json!({ "$schema": schemas::DRAFT4, "title": title });
    v.as_object_mut().unwrap().extend(body.as_object().unwrap().clone());
    v
}

#[test]
fn a_cross_file_reference_is_copied_into_the_document() {
    let dir = folder(&[
        (
            "common.json",
            doc(
                "Common",
                json!({ "definitions": {
                    "UserId": { "type": "string", "pattern": "^[a-z]+$" },
                    "Pair": { "type": "array", "items": { "$ref": "#/definitions/UserId" } }
                }}),
            ),
        ),
        ("req.json", doc("Req", json!({ "type": "object", "properties": { "p": { "$ref": "common.json#/definitions/Pair" } } }))),
    ]);
    let bundled = schemas::load(&dir);
    let req = &bundled["req.json"];
    assert_eq!(req["properties"]["p"]["$ref"], "#/definitions/Pair");
    assert_eq!(req["definitions"]["Pair"]["items"]["$ref"], "#/definitions/UserId", "refs inside a copy point at local copies");
    assert_eq!(req["definitions"]["UserId"]["pattern"], "^[a-z]+$");
    let inlined = schemas::inline_refs(req, req);
    assert_eq!(inlined["properties"]["p"]["items"]["pattern"], "^[a-z]+$");
}

#[test]
#[should_panic(expected = "keyword const is not in the draft-04 subset")]
fn a_keyword_outside_draft_04_fails_the_build() {
    let dir = folder(&[("x.json", doc("X", json!({ "type": "object", "properties": { "a": { "const": 1 } } })))]);
    schemas::load(&dir);
}

#[test]
fn a_ref_to_a_whole_file_bundles_that_file_under_its_title() {
    let dir = folder(&[
        ("a.json", json!({ "$schema": schemas::DRAFT4, "title": "A", "type": "object", "properties": { "b": { "$ref": "b.json#" } } })),
        (
            "b.json",
            json!({ "$schema": schemas::DRAFT4, "title": "B", "type": "object", "properties": { "c": { "$ref": "#/definitions/C" } },
                           "definitions": { "C": { "type": "string" } } }),
        ),
    ]);
    let bundled = schemas::load(&dir);
    let a = &bundled["a.json"];
    assert_eq!(a["properties"]["b"]["$ref"], "#/definitions/B");
    assert_eq!(a["definitions"]["B"]["properties"]["c"]["$ref"], "#/definitions/C", "the file's own refs follow it");
    assert_eq!(a["definitions"]["C"]["type"], "string");
    assert!(a["definitions"]["B"].get("$schema").is_none());
}

#[test]
#[should_panic(expected = "needs a title")]
fn a_schema_without_a_title_fails_the_build() {
    let dir = folder(&[("x.json", json!({ "$schema": schemas::DRAFT4, "type": "object" }))]);
    schemas::load(&dir);
}

#[test]
fn every_route_of_the_table_is_one_operation_of_the_document() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema");
    let bundled = schemas::load(&dir);
    let d = openapi::document(&bundled, routes::ROUTES);
    for r in routes::ROUTES {
        let op = &d["paths"][r.path][r.method];
        assert_eq!(op["operationId"], r.operation_id);
        for (code, _) in r.errors {
            assert_eq!(op["responses"][code.to_string()]["content"]["application/json"]["schema"]["$ref"], "#/components/schemas/ErrorBody");
        }
        let media = if r.streamed { "text/event-stream" } else { "application/json" };
        let ok = op["responses"]["200"]["content"][media]["schema"]["$ref"].as_str().unwrap();
        let component = ok.trim_start_matches("#/components/schemas/");
        assert!(d["components"]["schemas"][component].is_object(), "{component} is a component");
        assert_eq!(op["responses"]["200"]["headers"].is_object(), r.rate_limited);
    }
    let count: usize = d["paths"].as_object().unwrap().values().map(|p| p.as_object().unwrap().len()).sum();
    assert_eq!(count, routes::ROUTES.len());
    let model = openapi::apigw_model(&bundled["chat-request.json"]);
    assert!(!model.to_string().contains("$ref"));
}

/// Every `$ref` of the document names a component it has (a route naming a schema the
/// components leave out would break every client generator).
#[test]
fn every_reference_in_the_openapi_document_resolves() {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(r)) = m.get("$ref") {
                    out.push(r.clone());
                }
                m.values().for_each(|x| refs(x, out));
            }
            Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let d: Value = serde_json::from_str(coach_api::schemas::OPENAPI).unwrap();
    let mut found = vec![];
    refs(&d, &mut found);
    assert!(!found.is_empty());
    for r in found {
        let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("{r} is not a component reference"));
        assert!(d["components"]["schemas"].get(name).is_some(), "{r} does not resolve");
    }
}
