//! Every `prompts/*.tera` (and every variant's, `prompts/variants/NAME/*.tera`) is parsed, so a
//! template syntax error fails the build, and embedded with the templates' content hash.

use std::fs;
use std::path::{Path, PathBuf};

/// `OUT_DIR/prompts.rs`: the templates as `(name, text)` pairs, their hash (the prompt
/// version's first part, the same function the service uses for `PROMPTS_DIR`), and the
/// variants as `(name, overrides, model row)`.
pub fn embedded(dir: &Path) -> String {
    let paths = checked(dir);
    let list = pairs(&paths);
    let texts: Vec<(String, String)> = paths.iter().map(|p| (file_name(p), fs::read_to_string(p).unwrap())).collect();
    let hash = crate::prompt_hash::templates_hash(texts.iter().map(|(n, t)| (n.as_str(), t.as_str())));
    let mut variants = String::new();
    let root = dir.join("variants");
    if root.is_dir() {
        let mut names: Vec<PathBuf> = fs::read_dir(&root).unwrap().map(|e| e.unwrap().path()).filter(|p| p.is_dir()).collect();
        names.sort();
        for v in names {
            let model = fs::read_to_string(v.join("model.txt")).ok().map(|m| m.trim().to_string()).filter(|m| !m.is_empty());
            let files: Vec<PathBuf> = tera_paths(&v);
            check_with_base(&paths, &files);
            variants.push_str(&format!("    ({:?}, &[\n{}    ], {:?}),\n", file_name(&v), pairs(&files), model));
        }
    }
    format!(
        "/// prompts/*.tera, embedded at build time.\npub const EMBEDDED: &[(&str, &str)] = &[\n{list}];\n\
         /// The embedded templates' content hash, computed at build.\npub const EMBEDDED_HASH: &str = {hash:?};\n\
         /// A variant: its name, its templates `(name, text)` and its model row.\npub type EmbeddedVariant = (&'static str, &'static [(&'static str, &'static str)], Option<&'static str>);\n\
         /// prompts/variants/NAME/: each variant's overrides and its model row.\npub const VARIANTS: &[EmbeddedVariant] = &[\n{variants}];\n"
    )
}

fn file_name(p: &Path) -> String {
    p.file_name().unwrap().to_string_lossy().into_owned()
}

fn pairs(paths: &[PathBuf]) -> String {
    paths.iter().map(|p| format!("    ({:?}, include_str!({:?})),\n", file_name(p), p.display().to_string())).collect()
}

fn tera_paths(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().and_then(|e| e.to_str()) == Some("tera")).collect();
    paths.sort();
    paths
}

fn checked(dir: &Path) -> Vec<PathBuf> {
    let paths = tera_paths(dir);
    if paths.is_empty() {
        panic!("prompts/ holds no .tera templates");
    }
    parse(&paths);
    paths
}

/// A variant's templates parse together with the base ones they override.
fn check_with_base(base: &[PathBuf], overrides: &[PathBuf]) {
    let names: Vec<String> = overrides.iter().map(|p| file_name(p)).collect();
    let mut all: Vec<PathBuf> = base.iter().filter(|p| !names.contains(&file_name(p))).cloned().collect();
    all.extend(overrides.iter().cloned());
    parse(&all);
}

fn parse(paths: &[PathBuf]) {
    let mut tera = tera::Tera::default();
    if let Err(e) = tera.add_template_files(paths.iter().map(|p| (p.clone(), Some(file_name(p))))) {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!("\n  {s}"));
            src = s.source();
        }
        panic!("a prompt template does not parse: {msg}");
    }
}
