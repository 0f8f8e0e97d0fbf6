//! Building the prompt. Templates live in `prompts/` (the prompt authors' room): embedded at
//! build time, or read from `PROMPTS_DIR` so authors can iterate without a build. Loading is
//! strict: an undefined variable is a render error, never an empty string. Values are
//! inserted as data; a golfer's `{{ }}` or `{% %}` is never evaluated.
//!
//! A variant is a folder of overrides, `prompts/variants/NAME/` (templates, and optionally
//! `model.txt` naming a row of the model table), tried on a share of golfers
//! (`EXPERIMENT=NAME:PERCENT`). Every set of templates has a content hash; with the model row
//! it is the prompt version every turn, metric line and rating names.
//!
//! `vars` is what templates receive, `pack` fits the rendered messages into the token budget.

pub mod experiment;
pub mod hash;
pub mod pack;
pub mod vars;

pub use hash::templates_hash;

pub use pack::{pack, PackError, Packed};
pub use vars::{Detail, HistoryTurn, PromptMessage, PromptRole, PromptVars, ReplyVars};

use std::path::Path;

use tera::Tera;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/prompts.rs"));
}

pub const SYSTEM: &str = "system.tera";
pub const CONTEXT: &str = "context.tera";
pub const MESSAGE: &str = "message.tera";
pub const OFFLINE: &str = "offline.tera";
pub const FALLBACK: &str = "fallback.tera";
pub const LIMIT: &str = "limit.tera";
pub const FILTERED: &str = "filtered.tera";
pub const REFUSAL: &str = "refusal.tera";
pub const SHORTER: &str = "shorter.tera";
const REQUIRED: [&str; 9] = [SYSTEM, CONTEXT, MESSAGE, OFFLINE, FALLBACK, LIMIT, FILTERED, REFUSAL, SHORTER];

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("template {0} is missing from prompts/")]
    Missing(&'static str),
    #[error("templates do not load: {0}")]
    Load(String),
    #[error("template {template} does not render: {problem}")]
    Render { template: String, problem: String },
    #[error("reading prompts: {0}")]
    Io(#[from] std::io::Error),
    #[error("no prompt variant {0} (prompts/variants/NAME/)")]
    NoVariant(String),
}

/// Every `*.tera` in `dir` as (file name, text).
fn tera_files(dir: &Path) -> Result<Templates, PromptError> {
    let mut pairs = vec![];
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("tera") {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            pairs.push((name, std::fs::read_to_string(&path)?));
        }
    }
    Ok(pairs)
}

/// Templates as (file name, text).
type Templates = Vec<(String, String)>;

/// A variant folder: its template overrides and the model row named in `model.txt`.
fn read_variant(dir: &Path) -> Result<(Templates, Option<String>), PromptError> {
    if !dir.is_dir() {
        return Err(PromptError::NoVariant(dir.display().to_string()));
    }
    let model = match std::fs::read_to_string(dir.join("model.txt")) {
        Ok(m) => Some(m.trim().to_string()).filter(|m| !m.is_empty()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    Ok((tera_files(dir)?, model))
}

/// Tera's errors nest the useful part; flatten the chain into one line.
fn chain(e: &tera::Error) -> String {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    msg
}

#[derive(Debug, Clone)]
pub struct Prompts {
    tera: Tera,
    /// A hash of every template's name and text (`templates_hash`).
    hash: String,
}

/// The prompt version: the templates' hash with the model row that answers (`ModelSpec::asked`:
/// its name and every parameter that changes what the model is asked), 12 hex digits.
pub fn prompt_version(templates: &str, model_asked: &str) -> String {
    use sha2::{Digest, Sha256};
    let row = format!("{templates}|{model_asked}");
    hex::encode(&Sha256::digest(row.as_bytes())[..6])
}

/// A variant: its name, its templates (the base's with its overrides) and the model row it
/// calls instead of the deployment's, if any.
#[derive(Debug, Clone)]
pub struct Variant {
    pub name: String,
    pub prompts: Prompts,
    pub model: Option<String>,
}

impl Prompts {
    /// The templates compiled into the binary (their hash computed by the build).
    pub fn embedded() -> Result<Self, PromptError> {
        let prompts = Self::from_pairs(embedded::EMBEDDED.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect())?;
        Ok(Self { hash: embedded::EMBEDDED_HASH.to_string(), ..prompts })
    }

    /// A hash of the templates' names and texts: part of the prompt version.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The variant `name`: from `dir/variants/NAME/` (`PROMPTS_DIR`), else embedded.
    pub fn variant(name: &str, dir: Option<&Path>) -> Result<Variant, PromptError> {
        let (overrides, model) = match dir {
            Some(dir) => read_variant(&dir.join("variants").join(name))?,
            None => {
                let Some((_, files, model)) = embedded::VARIANTS.iter().find(|(n, _, _)| *n == name) else {
                    return Err(PromptError::NoVariant(name.to_string()));
                };
                (files.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect(), model.map(str::to_string))
            }
        };
        let mut pairs: std::collections::BTreeMap<String, String> = match dir {
            Some(dir) => tera_files(dir)?.into_iter().collect(),
            None => embedded::EMBEDDED.iter().map(|(n, c)| (n.to_string(), c.to_string())).collect(),
        };
        pairs.extend(overrides);
        Ok(Variant { name: name.to_string(), prompts: Self::from_pairs(pairs.into_iter().collect())?, model })
    }

    /// Every `*.tera` in `dir`, read now (their hash computed as they load).
    pub fn from_dir(dir: &Path) -> Result<Self, PromptError> {
        Self::from_pairs(tera_files(dir)?)
    }

    /// The configured folder (`PROMPTS_DIR`), else the embedded templates.
    pub fn load(dir: Option<&Path>) -> Result<Self, PromptError> {
        match dir {
            Some(dir) => Self::from_dir(dir),
            None => Self::embedded(),
        }
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, PromptError> {
        let hash = templates_hash(pairs.iter().map(|(n, c)| (n.as_str(), c.as_str())));
        let mut tera = Tera::default();
        tera.autoescape_on(vec![]);
        tera.add_raw_templates(pairs).map_err(|e| PromptError::Load(chain(&e)))?;
        for name in REQUIRED {
            if !tera.get_template_names().any(|n| n == name) {
                return Err(PromptError::Missing(name));
            }
        }
        Ok(Self { tera, hash })
    }

    pub fn render<T: serde::Serialize>(&self, template: &str, vars: &T) -> Result<String, PromptError> {
        self.render_context(template, &Self::context(template, vars)?)
    }

    /// The templates' variables for `vars`, to build once for several templates rendered from
    /// them ([`Prompts::render_context`]); `template` names the first in an error.
    pub fn context<T: serde::Serialize>(template: &str, vars: &T) -> Result<tera::Context, PromptError> {
        tera::Context::from_serialize(vars).map_err(|e| PromptError::Render { template: template.to_string(), problem: chain(&e) })
    }

    /// Renders with a context built once for several templates ([`Prompts::context`]).
    pub fn render_context(&self, template: &str, ctx: &tera::Context) -> Result<String, PromptError> {
        let out = self.tera.render(template, ctx).map_err(|e| PromptError::Render { template: template.to_string(), problem: chain(&e) })?;
        Ok(out.trim().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn copy_of_prompts(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("{e}"));
        for (name, text) in embedded::EMBEDDED {
            std::fs::write(dir.join(name), text).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn the_prompt_version_changes_when_a_template_changes_and_only_then() -> Result<(), PromptError> {
        let built = Prompts::embedded()?;
        // The build's hash of the embedded templates is the one loading them computes.
        assert_eq!(built.hash(), templates_hash(embedded::EMBEDDED.iter().copied()));
        let dir = std::env::temp_dir().join(format!("prompts-{}", uuid::Uuid::new_v4().simple()));
        copy_of_prompts(&dir);
        assert_eq!(Prompts::from_dir(&dir)?.hash(), built.hash(), "the same templates from PROMPTS_DIR: the same version");
        let system = std::fs::read_to_string(dir.join(SYSTEM))?;
        std::fs::write(dir.join(SYSTEM), system.replace("warm, direct", "warm, brief"))?;
        let changed = Prompts::from_dir(&dir)?;
        let _ = std::fs::remove_dir_all(&dir);
        assert_ne!(changed.hash(), built.hash(), "a changed template: a new version");
        let row = crate::llm::table::spec("gpt-6-luna").map_err(|e| PromptError::Load(e.to_string()))?;
        let other = crate::llm::table::spec("gpt-6.1-terra").map_err(|e| PromptError::Load(e.to_string()))?;
        assert_ne!(prompt_version(built.hash(), &row.asked()), prompt_version(changed.hash(), &row.asked()));
        assert_ne!(prompt_version(built.hash(), &row.asked()), prompt_version(built.hash(), &other.asked()), "another model row: another version");
        assert_eq!(prompt_version(built.hash(), &row.asked()), prompt_version(Prompts::embedded()?.hash(), &row.asked()), "and otherwise the same");
        Ok(())
    }

    #[test]
    fn a_variant_overrides_the_base_templates_it_names() -> Result<(), PromptError> {
        let warmer = Prompts::variant("warmer", None)?;
        let vars = crate::prompts::pack::tests::example_vars();
        assert!(warmer.prompts.render(SYSTEM, &vars)?.contains("notices something the golfer did well"));
        assert_eq!(warmer.prompts.render(CONTEXT, &vars)?, Prompts::embedded()?.render(CONTEXT, &vars)?, "what it does not override is the base's");
        assert!(matches!(Prompts::variant("no-such", None), Err(PromptError::NoVariant(_))));
        Ok(())
    }
}
