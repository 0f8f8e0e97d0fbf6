//! Build-time generation from the declarative specs; each job is a module of `build/`:
//!
//! - `schemas`: `schema/*.json` (draft-04 subset) checked and bundled into `OUT_DIR/schema/`
//!   for the runtime validator;
//! - `models`: typify's Rust types in `OUT_DIR/models.rs`;
//! - `openapi`: the API Gateway request model and the OpenAPI document, from the schemas and
//!   the route table the router serves (`src/api/routes.rs`), in `OUT_DIR/generated/`
//!   (a test compares them with `infra/generated/`);
//! - `prompts`: every `prompts/*.tera` parsed (a syntax error fails the build) and embedded;
//! - `tokenizer`: the gpt-4o vocabulary as static tables (`src/tokens/table.rs`).
//!
//! Build scripts may panic: a panic here is a failed build with the message shown.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::path::PathBuf;

#[path = "build/models.rs"]
mod models;
#[path = "build/openapi.rs"]
mod openapi;
#[path = "src/prompts/hash.rs"]
mod prompt_hash;
#[path = "build/prompts.rs"]
mod prompts;
#[path = "src/api/routes.rs"]
#[allow(dead_code, reason = "the router uses the operations; the build reads the rest")]
mod routes;
#[path = "build/schemas.rs"]
mod schemas;
#[path = "src/tokens/table.rs"]
mod token_table;
#[path = "build/tokenizer.rs"]
mod tokenizer;

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    for input in ["schema", "prompts", "build.rs", "build", "src/tokens/table.rs", "src/api/routes.rs", "src/prompts/hash.rs"] {
        println!("cargo:rerun-if-changed={input}");
    }

    tokenizer::tables(&out);

    let bundled = schemas::load(&root.join("schema"));
    fs::create_dir_all(out.join("schema")).unwrap();
    for (name, doc) in &bundled {
        fs::write(out.join("schema").join(name), schemas::pretty(doc)).unwrap();
    }
    fs::write(out.join("models.rs"), models::generate(&bundled)).unwrap();

    let generated = out.join("generated");
    fs::create_dir_all(&generated).unwrap();
    let model = openapi::apigw_model(&bundled["chat-request.json"]);
    fs::write(generated.join("apigw-chat-request-model.json"), schemas::pretty(&model)).unwrap();
    let document = openapi::document(&bundled, routes::ROUTES);
    fs::write(generated.join("openapi.json"), schemas::pretty(&document)).unwrap();

    fs::write(out.join("prompts.rs"), prompts::embedded(&root.join("prompts"))).unwrap();
}
