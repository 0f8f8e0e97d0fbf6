//! Every `prompts/*.tera` is parsed, so a template syntax error fails the build, and embedded.

use std::fs;
use std::path::{Path, PathBuf};

/// `OUT_DIR/prompts.rs`: the templates as `(name, text)` pairs.
pub fn embedded(dir: &Path) -> String {
    let list: String = checked(dir)
        .iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            format!("    ({name:?}, include_str!({:?})),\n", p.display().to_string())
        })
        .collect();
    format!("/// prompts/*.tera, embedded at build time.\npub const EMBEDDED: &[(&str, &str)] = &[\n{list}];\n")
}

fn checked(dir: &Path) -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("tera"))
        .collect();
    if paths.is_empty() {
        panic!("prompts/ holds no .tera templates");
    }
    paths.sort();
    let mut tera = tera::Tera::default();
    if let Err(e) = tera.add_template_files(paths.iter().map(|p| (p.clone(), None::<String>))) {
        let mut msg = e.to_string();
        let mut src = std::error::Error::source(&e);
        while let Some(s) = src {
            msg.push_str(&format!("\n  {s}"));
            src = s.source();
        }
        panic!("a prompt template does not parse: {msg}");
    }
    paths
}
